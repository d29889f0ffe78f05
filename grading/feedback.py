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
from nbgrader.preprocessors import ClearHiddenTests

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
