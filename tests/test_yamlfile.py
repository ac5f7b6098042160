"""Strict YAML: repeated keys found with their lines, numbers kept as written."""

from __future__ import annotations

from pathlib import Path

from harness import yamlfile
from harness.errors import Problems


def test_repeated_keys_at_any_depth_are_all_found() -> None:
    text = "a: 1\nb:\n  - {x: 1, y: 2, x: 3}\n  - c: {d: 1}\n    c: 2\na: 4\n"
    # '1' and 1 are different keys: a string and an integer.
    (document,) = yamlfile.documents(text + "'1': 5\n1: 6\n")

    assert [(d.key, d.line, d.first_line) for d in document.duplicates] == [
        ("b[0].x", 3, 3),
        ("b[1].c", 5, 4),
        ("a", 6, 1),
    ]
    assert document.data["a"] == 4


def test_aliases_and_merges_are_not_repeats() -> None:
    text = "base: &b {x: 1}\nmore:\n  <<: *b\n  y: 2\nloop: &l [*l]\n"

    (document,) = yamlfile.documents(text)

    assert document.duplicates == ()
    assert document.data["more"] == {"x": 1, "y": 2}


def test_floats_keep_their_text() -> None:
    (document,) = yamlfile.documents("series: 6.10\nother: 6.1\n")

    assert document.data["series"] == 6.1
    assert yamlfile.as_written(document.data["series"]) == "6.10"
    assert yamlfile.quote_hint(document.data["series"]) == (
        "6.10 is a number to YAML (read as 6.1); write it quoted: '6.10'"
    )
    assert yamlfile.quote_hint(document.data["other"]) == (
        "6.1 is a number to YAML; write it quoted: '6.1'"
    )


def test_read_records_every_problem_and_returns_the_data(tmp_path: Path) -> None:
    path = tmp_path / "f.yaml"
    path.write_text("k: 1\nk: 2\n")
    problems = Problems(str(path))

    assert yamlfile.read(path, problems, "a mapping") == {"k": 2}
    assert [(p.key, p.message) for p in problems.items] == [
        (
            "k",
            "duplicate key on line 2 (first on line 1): YAML would keep only the "
            "last; remove or rename one",
        )
    ]


def test_read_empty_missing_and_broken_files(tmp_path: Path) -> None:
    empty = tmp_path / "empty.yaml"
    empty.write_text("# nothing yet\n")
    broken = tmp_path / "broken.yaml"
    broken.write_text("a: [\n")
    problems = Problems("f")

    for path in (empty, tmp_path / "absent.yaml", broken):
        assert yamlfile.read(path, problems, "a `kernels:` list") is None

    assert [p.message.split(":")[0] for p in problems.items] == [
        "the file is empty",
        "file not found",
        "not valid YAML",
    ]
    assert problems.items[0].message.endswith("write a `kernels:` list in it")
