# nbgrader configuration used by every `python -m grading` command.
# Loaded explicitly with traitlets' PyFileConfigLoader: NbGraderAPI(config=...) does not read
# nbgrader_config.py on its own (shared/PITFALLS.md item 2).
c = get_config()  # noqa: F821  (provided by traitlets)

c.CourseDirectory.course_id = "transformer-mechanics"

# The stub students see where a solution region was.
c.ClearSolutions.code_stub = {"python": "# YOUR CODE HERE\nraise NotImplementedError()"}
c.ClearSolutions.text_stub = "YOUR ANSWER HERE"

# A deleted test cell is put back and graded instead of silently scoring 0 (PITFALLS item 8).
c.OverwriteCells.add_missing_cells = True

# Execute.timeout, not ExecutePreprocessor.timeout, is the per-cell limit (PITFALLS item 5).
# `python -m grading autograde --cell-timeout` overrides it.
c.Execute.timeout = 60
c.Execute.interrupt_on_timeout = True

# Students are created as they are graded (PITFALLS item 1).
c.Autograde.create_student = True

# Feedback goes to students: strip hidden tests and their tracebacks (PITFALLS item 11).
c.GenerateFeedback.preprocessors = [
    "nbgrader.preprocessors.GetGrades",
    "grading.feedback.StripHiddenTests",
    "nbconvert.preprocessors.CSSHTMLHeaderPreprocessor",
]

# Huge outputs are cut so one student cannot blow up the gradebook or the feedback: by lines (nbgrader's
# LimitOutput) and by size (grading.feedback.LimitOutputSize, which replaces it in the autograde steps).
c.LimitOutput.max_lines = 200
c.LimitOutput.max_traceback = 100
c.LimitOutputSize.max_lines = 200
c.LimitOutputSize.max_traceback = 100
from nbgrader.converters import Autograde  # noqa: E402
from grading.feedback import LimitOutputSize  # noqa: E402

c.Autograde.autograde_preprocessors = [
    LimitOutputSize if p.__name__ == "LimitOutput" else p
    for p in Autograde.class_traits()["autograde_preprocessors"].make_dynamic_default()
]

# Released notebooks carry no saved widget state (see grading.feedback.ClearWidgetState).
from nbgrader.converters import GenerateAssignment  # noqa: E402

c.GenerateAssignment.preprocessors = list(GenerateAssignment.class_traits()["preprocessors"].make_dynamic_default()) + [
    "grading.feedback.ClearWidgetState"
]
