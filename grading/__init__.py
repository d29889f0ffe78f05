"""Instructor tooling for the Transformer Mechanics course (``python -m grading``).

A thin layer over nbgrader's own API (``nbgrader.apps.NbGraderAPI``,
``nbgrader.validator.Validator``, the ``Gradebook``) that closes the gaps
measured in ``shared/PITFALLS.md``: one throwaway course root per submission,
restored test cells reported, hidden tests stripped from feedback, a validate
that exits 1 on failure, and a CSV with one row per student and chapter.
"""
