"""Training data from channels: CSV, JSON Lines and Parquet, and every user-caused error."""

from __future__ import annotations

import json

import pytest

from smneuron.errors import DataError
from smneuron.training.data import channel_files, load_splits

pytest.importorskip("datasets")

ROWS = [
    {"text": "win a free cruise now", "label": "spam"},
    {"text": "see you at lunch", "label": "ham"},
    {"text": "claim your prize", "label": "spam"},
]


def csv_text(rows=ROWS, header=("text", "label")):
    lines = [",".join(header)] + [",".join(str(r[h]) for h in header) for r in rows]
    return "\n".join(lines) + "\n"


def jsonl_text(rows=ROWS):
    return "".join(json.dumps(r) + "\n" for r in rows)


def parquet_bytes(rows=ROWS):
    import io

    import pandas as pd

    buffer = io.BytesIO()
    pd.DataFrame(rows).to_parquet(buffer)
    return buffer.getvalue()


def load(opt_ml, **overrides):
    options = {
        "train_channel": "train",
        "validation_channel": "validation",
        "text_column": "text",
        "label_column": "label",
    }
    options.update(overrides)
    channels = {p.name: p for p in opt_ml.paths.data.iterdir()}
    return load_splits(channels, cache_dir=opt_ml.base / "cache", **options)


@pytest.mark.parametrize(
    "name, content",
    [
        ("part.csv", csv_text()),
        ("part.jsonl", jsonl_text()),
        ("part.json", jsonl_text()),
        ("part.parquet", parquet_bytes()),
    ],
)
def test_each_format_loads_with_labels_encoded(opt_ml, name, content):
    opt_ml.channel("train", {name: content})
    opt_ml.channel("validation", {name: content})
    splits = load(opt_ml)
    assert splits.label_names == ("ham", "spam")
    assert splits.train["text"] == [r["text"] for r in ROWS]
    assert splits.train["labels"] == [1, 0, 1]
    assert len(splits.validation) == 3


def test_every_file_of_a_channel_is_read_hidden_ones_skipped(opt_ml):
    opt_ml.channel(
        "train",
        {"a.csv": csv_text(ROWS[:1]), "b.csv": csv_text(ROWS[1:]), ".DS_Store": b"\x00junk"},
    )
    splits = load(opt_ml, validation_channel="")
    assert len(splits.train) == 3
    assert splits.validation is None


def test_explicit_format_reads_files_without_extension(opt_ml):
    opt_ml.channel("train", {"data": jsonl_text()})
    splits = load(opt_ml, validation_channel="", data_format="jsonl")
    assert len(splits.train) == 3


def test_configurable_columns_and_given_label_order(opt_ml):
    rows = [{"body": r["text"], "y": r["label"]} for r in ROWS]
    opt_ml.channel("train", {"d.jsonl": jsonl_text(rows)})
    splits = load(
        opt_ml,
        validation_channel="",
        text_column="body",
        label_column="y",
        labels=("spam", "ham"),
    )
    assert splits.label_names == ("spam", "ham")
    assert splits.train["labels"] == [0, 1, 0]


def test_numeric_labels_and_text_that_looks_like_missing_values(opt_ml):
    rows = [{"text": "NA", "label": 0}, {"text": "null", "label": 1}]
    opt_ml.channel("train", {"d.csv": csv_text(rows)})
    splits = load(opt_ml, validation_channel="")
    assert splits.train["text"] == ["NA", "null"]
    assert splits.label_names == ("0", "1")


def test_missing_channel_names_it_and_lists_the_present_ones(opt_ml):
    opt_ml.channel("train", {"d.csv": csv_text()})
    opt_ml.channel("extra", {"d.csv": csv_text()})
    with pytest.raises(DataError) as info:
        load(opt_ml)
    assert "channel 'validation' not found" in info.value.message
    assert "channels present: extra, train" in info.value.message


def test_empty_channel_directory(opt_ml):
    opt_ml.channel("train")
    with pytest.raises(DataError, match="channel 'train' .* has no data files"):
        load(opt_ml, validation_channel="")


def test_empty_file_is_named(opt_ml):
    opt_ml.channel("train", {"d.csv": ""})
    with pytest.raises(DataError, match="channel 'train': file d.csv is empty"):
        load(opt_ml, validation_channel="")


def test_header_only_file_has_no_rows(opt_ml):
    opt_ml.channel("train", {"d.csv": "text,label\n"})
    with pytest.raises(DataError, match="holds no rows"):
        load(opt_ml, validation_channel="")


@pytest.mark.parametrize(
    "name, content",
    [
        ("d.jsonl", '{"text": "hi", "label": "ham"}\n{broken\n'),
        ("d.parquet", b"PAR1 this is not parquet"),
        ("d.csv", 'text,label\n"unterminated,ham\nok,spam\n'),
    ],
)
def test_malformed_file_is_a_data_error_naming_file_and_format(opt_ml, name, content):
    opt_ml.channel("train", {name: content})
    with pytest.raises(DataError) as info:
        load(opt_ml, validation_channel="")
    assert f"cannot read {name}" in info.value.message
    assert "\n" not in info.value.message


def test_unknown_extension_asks_for_data_format(opt_ml):
    opt_ml.channel("train", {"d.txt": "hello"})
    with pytest.raises(DataError, match="cannot tell the format of d.txt .* set data_format"):
        load(opt_ml, validation_channel="")


def test_mixed_formats_are_refused(opt_ml):
    opt_ml.channel("train", {"a.csv": csv_text(), "b.jsonl": jsonl_text()})
    with pytest.raises(DataError, match="mixes formats \\(csv, jsonl\\)"):
        load(opt_ml, validation_channel="")


def test_missing_column_names_it_and_lists_the_columns(opt_ml):
    opt_ml.channel("train", {"d.csv": csv_text()})
    with pytest.raises(DataError) as info:
        load(opt_ml, validation_channel="", text_column="message")
    assert "column 'message' not found; columns are: text, label" in info.value.message


def test_unknown_label_names_the_value_and_the_allowed_labels(opt_ml):
    opt_ml.channel("train", {"d.csv": csv_text()})
    bad = ROWS[:2] + [{"text": "hmm", "label": "maybe"}]
    opt_ml.channel("validation", {"d.csv": csv_text(bad)})
    with pytest.raises(DataError) as info:
        load(opt_ml)
    message = info.value.message
    assert "channel 'validation', row 3: label 'maybe' is not one of the labels (ham, spam)" in (
        message
    )


def test_label_outside_the_given_labels(opt_ml):
    opt_ml.channel("train", {"d.csv": csv_text()})
    with pytest.raises(DataError, match="label 'spam' is not one of the labels \\(ham, other\\)"):
        load(opt_ml, validation_channel="", labels=("ham", "other"))


def test_single_label_value_cannot_train_a_classifier(opt_ml):
    opt_ml.channel("train", {"d.csv": csv_text(ROWS[:1])})
    with pytest.raises(DataError, match="1 distinct value"):
        load(opt_ml, validation_channel="")


def test_non_text_value_in_text_column(opt_ml):
    opt_ml.channel("train", {"d.jsonl": jsonl_text([{"text": None, "label": "ham"}] + ROWS)})
    with pytest.raises(DataError, match="row 1: column 'text' holds None, not text"):
        load(opt_ml, validation_channel="")


def test_channel_files_lists_sorted_files_and_format(opt_ml):
    opt_ml.channel("train", {"b.csv.gz": b"x", "a.csv": "x"})
    found = channel_files("train", {"train": opt_ml.paths.channel("train")})
    assert [p.name for p in found.files] == ["a.csv", "b.csv.gz"]
    assert found.data_format == "csv"
