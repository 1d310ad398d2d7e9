"""The service layer: one function per verb that staff, beat or a sweep can trigger.

Entry points (admin/, tasks.py, management/commands/, views) make one call here each.
Each service runs in one transaction, writes its own audit event, and publishes work
through `enqueue` after commit. Below it: the orchestrator (reporting.runs), the archive
(reporting.archive), the pipeline and the models.

    runs.py       run now, send test, re-run, send anyway, re-run held, scheduled run, work on a run
    archive.py    resend, legal hold
    destinations.py  resend to a Slack, Teams or webhook destination
    reports.py    create or change a report (its schedule and recipients too), delete reports
    reports_as_code.py  export the definitions as YAML or JSON, import them (dry run, all or nothing)
    catch_up.py   the catch-up sweep: run late, or record as missed, the slots beat never started
    deadlines.py  the deadline sweep: publish again once, then fail, any run past its deadline
    enqueue.py    the one way work is published to the workers
"""
