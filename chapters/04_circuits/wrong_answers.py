"""Plausible wrong answers for chapter 04: each must lose its exercise's points (tests/test_graders.py)."""

WRONG_ANSWERS = {
    "threshold_gate": {
        "strict": '''
def threshold_gate(x, k):
    return x.sum(dim=-1) > k
''',
        "wrong_axis": '''
def threshold_gate(x, k):
    return x.sum(dim=0) >= k
''',
        "int_result": '''
def threshold_gate(x, k):
    return (x.sum(dim=-1) >= k).long()
''',
        # an OR gate: "at least one"
        "any_gate": '''
def threshold_gate(x, k):
    return x.any(dim=-1) if k > 0 else torch.ones(x.shape[0], dtype=torch.bool)
''',
    },
    "majority": {
        "ties_true": '''
def majority(x):
    return threshold_gate(x, (x.shape[-1] + 1) // 2)
''',
        "k_off_by_one": '''
def majority(x):
    return threshold_gate(x, x.shape[-1] // 2)
''',
        "mean_ge_half": '''
def majority(x):
    return x.float().mean(dim=-1) >= 0.5
''',
        "batch_axis": '''
def majority(x):
    return threshold_gate(x, x.shape[0] // 2 + 1)
''',
    },
    "parity_tc0": {
        "k_n_over_2": '''
def parity_tc0(n):
    c = cc.Circuit(n)
    g = [c.add("THRESHOLD", range(n), k=k) for k in range(1, n + 1)]
    alt = [g[k - 1] if k % 2 == 1 else c.add("NOT", [g[k - 1]]) for k in range(1, n + 1)]
    return c.set_outputs([c.add("THRESHOLD", alt, k=n // 2)])
''',
        "negate_odd": '''
def parity_tc0(n):
    c = cc.Circuit(n)
    g = [c.add("THRESHOLD", range(n), k=k) for k in range(1, n + 1)]
    alt = [c.add("NOT", [g[k - 1]]) if k % 2 == 1 else g[k - 1] for k in range(1, n + 1)]
    return c.set_outputs([c.add("THRESHOLD", alt, k=n // 2 + 1)])
''',
        # right values, exponential size
        "dnf": '''
import itertools

def parity_tc0(n):
    c = cc.Circuit(n)
    negs = [c.add("NOT", [i]) for i in range(n)]
    terms = [c.add("AND", [i if b else negs[i] for i, b in enumerate(bits)])
             for bits in itertools.product((0, 1), repeat=n) if sum(bits) % 2]
    return c.set_outputs([c.add("OR", terms)])
''',
        # right values, depth 3: "exactly k" gates then an OR
        "depth_three": '''
def parity_tc0(n):
    c = cc.Circuit(n)
    g = [c.add("THRESHOLD", range(n), k=k) for k in range(1, n + 2)]
    exact = [c.add("AND", [g[k - 1], c.add("NOT", [g[k]])]) for k in range(1, n + 1, 2)]
    return c.set_outputs([c.add("OR", exact)])
''',
    },
    "greater_than": {
        # treats wire 0 as the most significant bit
        "msb_first": '''
def greater_than(n):
    c = cc.Circuit(2 * n)
    a, b = list(range(n)), list(range(n, 2 * n))
    na = [c.add("NOT", [a[i]]) for i in range(n)]
    nb = [c.add("NOT", [b[i]]) for i in range(n)]
    eq = [c.add("OR", [c.add("AND", [a[i], b[i]]), c.add("AND", [na[i], nb[i]])]) for i in range(n)]
    terms = [c.add("AND", [a[i], nb[i], *eq[:i]]) for i in range(n)]
    return c.set_outputs([c.add("OR", terms)])
''',
        # a >= b: equality counted as greater
        "ge": '''
def greater_than(n):
    c = cc.Circuit(2 * n)
    a, b = list(range(n)), list(range(n, 2 * n))
    na = [c.add("NOT", [a[i]]) for i in range(n)]
    nb = [c.add("NOT", [b[i]]) for i in range(n)]
    eq = [c.add("OR", [c.add("AND", [a[i], b[i]]), c.add("AND", [na[i], nb[i]])]) for i in range(n)]
    terms = [c.add("AND", [a[i], nb[i], *eq[i + 1:]]) for i in range(n)]
    terms.append(c.add("AND", eq))
    return c.set_outputs([c.add("OR", terms)])
''',
        # right values, but a ripple from the top bit down: depth grows with n
        "ripple": '''
def greater_than(n):
    c = cc.Circuit(2 * n)
    a, b = list(range(n)), list(range(n, 2 * n))
    gt = None
    for i in range(n):
        ai_gt = c.add("AND", [a[i], c.add("NOT", [b[i]])])
        eq = c.add("OR", [c.add("AND", [a[i], b[i]]), c.add("AND", [c.add("NOT", [a[i]]), c.add("NOT", [b[i]])])])
        gt = ai_gt if gt is None else c.add("OR", [ai_gt, c.add("AND", [eq, gt])])
    return c.set_outputs([gt])
''',
        # right values and depth 4, but every term rebuilds the e_l it needs: O(n^2) gates
        "eq_per_term": '''
def greater_than(n):
    c = cc.Circuit(2 * n)
    a, b = list(range(n)), list(range(n, 2 * n))
    na = [c.add("NOT", [a[i]]) for i in range(n)]
    nb = [c.add("NOT", [b[i]]) for i in range(n)]
    terms = []
    for i in range(n):
        eq = [c.add("OR", [c.add("AND", [a[j], b[j]]), c.add("AND", [na[j], nb[j]])]) for j in range(i + 1, n)]
        terms.append(c.add("AND", [a[i], nb[i], *eq]))
    return c.set_outputs([c.add("OR", terms)])
''',
        # forgets that the higher bits must be equal
        "no_eq_prefix": '''
def greater_than(n):
    c = cc.Circuit(2 * n)
    a, b = list(range(n)), list(range(n, 2 * n))
    terms = [c.add("AND", [a[i], c.add("NOT", [b[i]])]) for i in range(n)]
    return c.set_outputs([c.add("OR", terms)])
''',
    },
    "average_sensitivity": {
        "per_bit": '''
def average_sensitivity(f, n):
    x = cc.all_inputs(n)
    fx = f(x)
    total = 0
    for i in range(n):
        y = x.clone()
        y[:, i] = ~y[:, i]
        total += int((f(y) != fx).sum())
    return total / (2 ** n * n)
''',
        # only flips that set a bit (0 -> 1)
        "only_0_to_1": '''
def average_sensitivity(f, n):
    x = cc.all_inputs(n)
    fx = f(x)
    total = 0
    for i in range(n):
        y = x.clone()
        y[:, i] = True
        total += int(((f(y) != fx) & ~x[:, i]).sum())
    return total / 2 ** n
''',
        "sum": '''
def average_sensitivity(f, n):
    x = cc.all_inputs(n)
    fx = f(x)
    total = 0
    for i in range(n):
        y = x.clone()
        y[:, i] = ~y[:, i]
        total += int((f(y) != fx).sum())
    return float(total)
''',
        "tensor": '''
def average_sensitivity(f, n):
    x = cc.all_inputs(n)
    fx = f(x)
    total = torch.zeros(())
    for i in range(n):
        y = x.clone()
        y[:, i] = ~y[:, i]
        total = total + (f(y) != fx).sum()
    return total / 2 ** n
''',
    },
    "evaluate_formula": {
        # Python's parser: no ValueError for malformed input, and it gives up on deep nesting
        "python_eval": '''
def evaluate_formula(s):
    return bool(eval(s.replace("!", " not ").replace("&", " and ").replace("|", " or ")))
''',
        "recursive": '''
def evaluate_formula(s):
    def parse(i):
        if i >= len(s):
            raise ValueError("unexpected end")
        ch = s[i]
        if ch in "01":
            return ch == "1", i + 1
        if ch == "!":
            v, j = parse(i + 1)
            return not v, j
        if ch == "(":
            a, j = parse(i + 1)
            if j >= len(s) or s[j] not in "&|":
                raise ValueError("expected an operator")
            op = s[j]
            b, k = parse(j + 1)
            if k >= len(s) or s[k] != ")":
                raise ValueError("expected )")
            return ((a and b) if op == "&" else (a or b)), k + 1
        raise ValueError(f"unexpected {ch!r}")
    v, end = parse(0)
    if end != len(s):
        raise ValueError("trailing characters")
    return v
''',
        "and_or_swap": '''
def evaluate_formula(s):
    stack = []
    def push(v):
        while stack and stack[-1] == "!":
            stack.pop()
            v = not v
        stack.append(v)
    for ch in s:
        if ch in "01":
            if stack and isinstance(stack[-1], bool):
                raise ValueError("bad")
            push(ch == "1")
        elif ch in "(!":
            if stack and isinstance(stack[-1], bool):
                raise ValueError("bad")
            stack.append(ch)
        elif ch in "&|":
            if not (stack and isinstance(stack[-1], bool) and len(stack) >= 2 and stack[-2] == "("):
                raise ValueError("bad")
            stack.append(ch)
        elif ch == ")":
            if not (len(stack) >= 4 and isinstance(stack[-1], bool) and stack[-2] in "&|" and stack[-4] == "("):
                raise ValueError("bad")
            b, op, a, _ = stack.pop(), stack.pop(), stack.pop(), stack.pop()
            push((a or b) if op == "&" else (a and b))
        else:
            raise ValueError("bad")
    if len(stack) != 1 or not isinstance(stack[0], bool):
        raise ValueError("bad")
    return stack[0]
''',
        # a run of ! negates once
        "not_run_once": '''
def evaluate_formula(s):
    stack = []
    def push(v):
        if stack and stack[-1] == "!":
            while stack and stack[-1] == "!":
                stack.pop()
            v = not v
        stack.append(v)
    for ch in s:
        if ch in "01":
            if stack and isinstance(stack[-1], bool):
                raise ValueError("bad")
            push(ch == "1")
        elif ch in "(!":
            if stack and isinstance(stack[-1], bool):
                raise ValueError("bad")
            stack.append(ch)
        elif ch in "&|":
            if not (stack and isinstance(stack[-1], bool) and len(stack) >= 2 and stack[-2] == "("):
                raise ValueError("bad")
            stack.append(ch)
        elif ch == ")":
            if not (len(stack) >= 4 and isinstance(stack[-1], bool) and stack[-2] in "&|" and stack[-4] == "("):
                raise ValueError("bad")
            b, op, a, _ = stack.pop(), stack.pop(), stack.pop(), stack.pop()
            push((a and b) if op == "&" else (a or b))
        else:
            raise ValueError("bad")
    if len(stack) != 1 or not isinstance(stack[0], bool):
        raise ValueError("bad")
    return stack[0]
''',
        # right values, no grammar check: a bare "0|1" or "(0&1|0)" is accepted
        "no_checks": '''
def evaluate_formula(s):
    vals, ops, neg = [], [], []
    pending = 0
    for ch in s:
        if ch == "!":
            pending += 1
        elif ch == "(":
            neg.append(pending)
            pending = 0
            ops.append("(")
        elif ch in "01":
            vals.append((ch == "1") ^ (pending % 2 == 1))
            pending = 0
        elif ch in "&|":
            ops.append(ch)
        elif ch == ")":
            op = ops.pop()
            ops.pop()
            b, a = vals.pop(), vals.pop()
            v = (a and b) if op == "&" else (a or b)
            vals.append(v ^ (neg.pop() % 2 == 1))
        else:
            raise ValueError("bad character")
    if len(vals) != 1:
        raise ValueError("bad")
    return bool(vals[0])
''',
    },
    "rake_label": {
        "reversed": '''
def rake_label(op, x, f_parent, f_sibling):
    h = ((0, 1) if x else (0, 0)) if op == "&" else ((1, 1) if x else (0, 1))
    return tuple(f_sibling[h[f_parent[y]]] for y in (0, 1))
''',
        "consts_swap": '''
def rake_label(op, x, f_parent, f_sibling):
    h = ((1, 1) if x else (0, 1)) if op == "&" else ((0, 1) if x else (0, 0))
    return tuple(f_parent[h[f_sibling[y]]] for y in (0, 1))
''',
        "no_parent": '''
def rake_label(op, x, f_parent, f_sibling):
    h = ((0, 1) if x else (0, 0)) if op == "&" else ((1, 1) if x else (0, 1))
    return tuple(h[f_sibling[y]] for y in (0, 1))
''',
        "no_sibling": '''
def rake_label(op, x, f_parent, f_sibling):
    h = ((0, 1) if x else (0, 0)) if op == "&" else ((1, 1) if x else (0, 1))
    return tuple(f_parent[h[y]] for y in (0, 1))
''',
        # right values, but a list: the exercise asks for a tuple (value at 0, value at 1)
        "list_not_tuple": '''
def rake_label(op, x, f_parent, f_sibling):
    h = ((0, 1) if x else (0, 0)) if op == "&" else ((1, 1) if x else (0, 1))
    return [f_parent[h[f_sibling[y]]] for y in (0, 1)]
''',
        # right values as bools: the exercise asks for ints
        "bool_entries": '''
def rake_label(op, x, f_parent, f_sibling):
    h = ((0, 1) if x else (0, 0)) if op == "&" else ((1, 1) if x else (0, 1))
    return tuple(bool(f_parent[h[f_sibling[y]]]) for y in (0, 1))
''',
    },
    "cot_trace": {
        "leftmost_only": '''
import re

def cot_trace(s):
    evaluate_formula(s)
    redex = re.compile(r"!([01])|\\(([01])([&|])([01])\\)")
    def reduce(m):
        if m.group(1) is not None:
            return "1" if m.group(1) == "0" else "0"
        a, op, b = int(m.group(2)), m.group(3), int(m.group(4))
        return str(a & b if op == "&" else a | b)
    trace = [s]
    while trace[-1] not in ("0", "1"):
        trace.append(redex.sub(reduce, trace[-1], count=1))
    return trace
''',
        "no_input": '''
import re

def cot_trace(s):
    evaluate_formula(s)
    redex = re.compile(r"!([01])|\\(([01])([&|])([01])\\)")
    def reduce(m):
        if m.group(1) is not None:
            return "1" if m.group(1) == "0" else "0"
        a, op, b = int(m.group(2)), m.group(3), int(m.group(4))
        return str(a & b if op == "&" else a | b)
    trace = [s]
    while trace[-1] not in ("0", "1"):
        trace.append(redex.sub(reduce, trace[-1]))
    return trace[1:] if len(trace) > 1 else trace
''',
        # negations first, then binary redexes on the result, in one step: two levels at once
        "two_passes": '''
import re

def cot_trace(s):
    evaluate_formula(s)
    neg = re.compile(r"!([01])")
    binary = re.compile(r"\\(([01])([&|])([01])\\)")
    trace = [s]
    while trace[-1] not in ("0", "1"):
        t = neg.sub(lambda m: "1" if m.group(1) == "0" else "0", trace[-1])
        t = binary.sub(lambda m: str(int(m.group(1)) & int(m.group(3)) if m.group(2) == "&"
                                     else int(m.group(1)) | int(m.group(3))), t)
        trace.append(t)
    return trace
''',
        # no validation: on "(0&1" no rewrite applies and the loop never ends (the test stops it after 10 s)
        "loops_on_malformed": '''
import re

def cot_trace(s):
    redex = re.compile(r"!([01])|\\(([01])([&|])([01])\\)")
    def reduce(m):
        if m.group(1) is not None:
            return "1" if m.group(1) == "0" else "0"
        a, op, b = int(m.group(2)), m.group(3), int(m.group(4))
        return str(a & b if op == "&" else a | b)
    trace = [s]
    while trace[-1] not in ("0", "1"):
        trace.append(redex.sub(reduce, trace[-1]))
    return trace
''',
        "no_checks": '''
import re

def cot_trace(s):
    redex = re.compile(r"!([01])|\\(([01])([&|])([01])\\)")
    def reduce(m):
        if m.group(1) is not None:
            return "1" if m.group(1) == "0" else "0"
        a, op, b = int(m.group(2)), m.group(3), int(m.group(4))
        return str(a & b if op == "&" else a | b)
    trace = [s]
    for _ in range(len(s)):
        if trace[-1] in ("0", "1"):
            break
        nxt = redex.sub(reduce, trace[-1])
        if nxt == trace[-1]:
            break
        trace.append(nxt)
    return trace
''',
    },
    "run_chain": {
        "extra_call": '''
def run_chain(step, s, max_steps):
    current = s
    for calls in range(max_steps + 2):
        if current in ("0", "1"):
            return current, calls
        if calls == max_steps + 1:
            break
        current = step(current)
    return None, max_steps
''',
        "last_string": '''
def run_chain(step, s, max_steps):
    current = s
    for calls in range(max_steps + 1):
        if current in ("0", "1"):
            return current, calls
        if calls == max_steps:
            break
        current = step(current)
    return current, max_steps
''',
        # the answer as an int 0/1 instead of the string "0"/"1"
        "int_answer": '''
def run_chain(step, s, max_steps):
    current = s
    for calls in range(max_steps + 1):
        if current in ("0", "1"):
            return int(current), calls
        if calls == max_steps:
            break
        current = step(current)
    return None, max_steps
''',
        # calls step before looking: a constant costs one call
        "step_first": '''
def run_chain(step, s, max_steps):
    current = s
    for calls in range(1, max_steps + 1):
        current = step(current)
        if current in ("0", "1"):
            return current, calls
    return None, max_steps
''',
    },
}
