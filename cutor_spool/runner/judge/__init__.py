"""Judge mode: a submission with `tests` is compiled once (by the pipeline), then its grader runs
and judges it; verdicts, subtasks and a score come out, with the seeds' message flow and a JUnit
report. See docs/judge.md.

    graders/      what running a submission means, chosen by the submission: run, batch
    cases.py      the tests and their data, read from the spool entry one at a time
    checkers/     exact, lines, tokens, floats (pure), and the sandboxed checker program
    verdicts.py   verdicts and results as values
    grading.py    the batch grader's tests: runs them and yields events
    scoring.py    fractions -> subtask and submission scores, outcome (pure)
    report.py     consumes events: status.json, events.jsonl, tests/<name>.json
    junit.py      result/junit.xml
"""
