import json

import pytest


def assert_report_traces(out) -> dict:
    """Every number of a study's report is read from a summary (same text once formatted) or names how it was
    computed and from which existing files; returns report.json."""
    md = (out / "report.md").read_text()
    report = json.loads((out / "report.json").read_text())
    cells = report["cells"]
    read = [c for c in cells if "file" in c]
    computed = [c for c in cells if "computed" in c]
    assert read and computed and len(cells) > 20
    for c in read:
        v = json.loads((out / c["file"]).read_text())
        for k in c["key"]:
            v = v[k]
        assert c["format"].format(v) == c["text"], c
        assert c["text"] in md, c
    for c in computed:  # computed numbers name what they were computed from, and those files exist
        assert c["text"] in md and c["from"], c
        for f in c["from"]:
            assert (out / (f["file"] if isinstance(f, dict) else f)).is_file(), c
    return report


@pytest.fixture
def report_traces():
    return assert_report_traces
