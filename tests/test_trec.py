"""TREC run files: six space-separated columns, ranks from 1, parsed back by pytrec_eval."""

import pytest
import pytrec_eval

from dive.errors import DiveError
from dive.trec import run_lines, write_run

HITS = [[{"doc_id": "d3", "score": 0.9}, {"doc_id": "d1", "score": 0.5}], [{"doc_id": "d2", "score": -0.25}]]


def test_a_run_file_has_six_columns_and_parses(tmp_path):
    assert write_run(tmp_path / "run.trec", ["q1", "q2"], HITS, tag="dive-pca") == 3
    lines = (tmp_path / "run.trec").read_text().splitlines()
    assert lines[0] == "q1 Q0 d3 1 0.9 dive-pca"
    assert [line.split()[3] for line in lines] == ["1", "2", "1"]
    assert all(len(line.split()) == 6 for line in lines)
    with open(tmp_path / "run.trec") as handle:
        assert pytrec_eval.parse_run(handle) == {"q1": {"d3": 0.9, "d1": 0.5}, "q2": {"d2": -0.25}}


@pytest.mark.parametrize("query_ids,hits,tag", [(["q 1", "q2"], HITS, "t"), (["q1", "q2"], HITS, "my tag"),
                                                (["q1", "q2"], [[{"doc_id": "", "score": 1.0}], []], "t")])
def test_ids_the_format_cannot_hold_are_refused_and_nothing_is_written(tmp_path, query_ids, hits, tag):
    with pytest.raises(DiveError, match="TREC run cannot hold it"):
        write_run(tmp_path / "run.trec", query_ids, hits, tag)
    assert list(tmp_path.iterdir()) == []


def test_queries_and_hits_must_align():
    with pytest.raises(ValueError):
        run_lines(["q1"], HITS)
