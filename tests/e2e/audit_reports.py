"""Reads berth audit reports with third-party parsers, for tests/e2e/audit.rs.

  python3 audit_reports.py sarif FILE   -> JSON list of [rule, severity, location, line]
  python3 audit_reports.py junit FILE   -> JSON {totals, cases: [[suite, case, result, message]]}

Needs the PyPI packages `sarif-tools` and `junitparser`.
"""
import json
import sys


def sarif(path):
    from sarif import loader

    data = loader.load_sarif_file(path)
    records = data.get_records()
    out = [[r["Code"].split(" ")[0], r["Severity"], r["Location"], int(r["Line"])] for r in records]
    print(json.dumps(out))


def junit(path):
    from junitparser import JUnitXml, Failure, Skipped, Error

    xml = JUnitXml.fromfile(path)
    cases = []
    for suite in xml:
        for case in suite:
            result = "passed"
            message = ""
            for r in case.result:
                if isinstance(r, Failure):
                    result = "failure"
                elif isinstance(r, Skipped):
                    result = "skipped"
                elif isinstance(r, Error):
                    result = "error"
                message = r.message or ""
            if result == "passed" and case.system_out:
                result = "passed-with-output"
            cases.append([suite.name, case.name, result, message])
    totals = {"tests": xml.tests, "failures": xml.failures, "errors": xml.errors, "skipped": xml.skipped}
    print(json.dumps({"totals": totals, "cases": cases}))


if __name__ == "__main__":
    {"sarif": sarif, "junit": junit}[sys.argv[1]](sys.argv[2])
