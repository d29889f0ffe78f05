"""Notebook filters for what students receive: feedback without hidden tests, releases without widget state.

nbgrader renders the autograded notebook, hidden tests included, into the
feedback HTML (nbgrader issues #917 and #1363; PITFALLS item 11). This
preprocessor runs inside ``GenerateFeedback`` (see ``nbgrader_config.py``): it
removes hidden-test regions with nbgrader's own ``ClearHiddenTests`` and, for
those cells, cuts error tracebacks (which quote the failing hidden line) down
to their final ``Error: message`` line. The student still learns which check
failed and why, not the test's code.
"""

from __future__ import annotations

from nbconvert.exporters.exporter import ResourcesDict
from nbformat.notebooknode import NotebookNode
from nbconvert.preprocessors import Preprocessor
from nbgrader.preprocessors import ClearHiddenTests, LimitOutput

HIDDEN_NOTE = "# (hidden tests ran here; their code is not shown)"


class StripHiddenTests(ClearHiddenTests):
    def preprocess_cell(
        self, cell: NotebookNode, resources: ResourcesDict, cell_index: int
    ) -> tuple[NotebookNode, ResourcesDict]:
        if cell.cell_type != "code" or self.begin_test_delimeter not in cell.source:
            return cell, resources
        self._remove_hidden_test_region(cell)
        cell.source = cell.source.rstrip("\n") + "\n" + HIDDEN_NOTE
        for output in cell.get("outputs", []):
            if output.get("output_type") == "error":
                output["traceback"] = [f"{output.get('ename', 'Error')}: {output.get('evalue', '')}"]
        return cell, resources



class ClearWidgetState(Preprocessor):
    """Drop saved ipywidget state (notebook metadata ``widgets``) from released notebooks.

    The reference notebook keeps it so rendered pages can show widgets; a student
    notebook starts without outputs, so the state is dead weight (tens of kB).
    """

    enabled = True

    def preprocess(self, nb: NotebookNode, resources: ResourcesDict) -> tuple[NotebookNode, ResourcesDict]:
        nb.metadata.pop("widgets", None)
        return nb, resources


class LimitOutputSize(LimitOutput):
    """nbgrader's LimitOutput (a number of lines) plus a limit in bytes: one huge line, one huge image or
    HTML output, or one huge error message cannot swell the graded notebook and the feedback either."""

    max_stream_chars = 200_000  # per cell, after the line limit
    max_data_chars = 2_000_000  # per rich output (a PNG of a figure is ~50 kB as base64)
    max_error_chars = 2_000

    def preprocess_cell(self, cell: NotebookNode, resources: ResourcesDict, cell_index: int):
        cell, resources = super().preprocess_cell(cell, resources, cell_index)
        if cell.cell_type != "code":
            return cell, resources
        left = self.max_stream_chars
        for output in cell.get("outputs", []):
            kind = output.get("output_type")
            if kind == "stream":
                text = output.get("text", "")
                if len(text) > left:
                    output["text"] = text[: max(left, 0)] + "\n... Output truncated ...\n"
                left -= len(output["text"])
            elif kind in ("display_data", "execute_result"):
                data = output.get("data", {})
                size = sum(len(v) if isinstance(v, str) else len(str(v)) for v in data.values())
                if size > self.max_data_chars:
                    output["data"] = {"text/plain": f"... Output truncated ... ({size / 2**20:.1f} MB removed)"}
            elif kind == "error":
                for key in ("ename", "evalue"):
                    value = output.get(key, "")
                    if len(value) > self.max_error_chars:
                        output[key] = value[: self.max_error_chars] + " ... (cut)"
        return cell, resources
