"""Static shapes: bucket choice, overflow, padding, truncation keeping [SEP]."""

import pytest

from smneuron.errors import PayloadTooLarge
from smneuron.serving.shapes import choose_bucket, fit_tokens, pad_row


@pytest.mark.parametrize(("length", "bucket"), [(1, 16), (16, 16), (17, 32), (64, 64)])
def test_smallest_bucket_that_fits(length, bucket):
    assert choose_bucket(length, (16, 32, 64)) == bucket


def test_overflow_truncates_or_rejects():
    assert choose_bucket(65, (16, 32, 64), "truncate") == 64
    with pytest.raises(PayloadTooLarge) as caught:
        choose_bucket(65, (16, 32, 64), "reject")
    assert caught.value.status_code == 413


def test_pad_and_fit():
    assert pad_row([5, 6], 4, 0) == ([5, 6, 0, 0], [1, 1, 0, 0])
    assert fit_tokens([101, 1, 2, 3, 4, 102], 4, [102]) == [101, 1, 2, 102]
    assert fit_tokens([101, 1, 102], 4, [102]) == [101, 1, 102]


def test_model_encode_uses_buckets_and_keeps_sep(opt_ml):
    from smneuron.artifact.backends import CpuBackend
    from smneuron.serving.model import load_compiled

    model = load_compiled(opt_ml / "model", CpuBackend())
    try:
        rows = model.encode(["short", "word " * 20, "word " * 500])
        assert [bucket for bucket, _, _ in rows] == [16, 32, 64]
        ids, mask = rows[2][1][:2]
        assert len(ids) == 64 and sum(mask) == 64
        assert ids[-1] == model.tokenizer.sep_token_id
        assert rows[0][1][1].count(1) == 3  # [CLS] short [SEP]
        assert rows[2][2].ids == ids  # the item the task sees holds the truncated tokens
    finally:
        model.close()


def test_incompatible_artifact_is_refused(opt_ml):
    import json

    from smneuron.artifact.backends import CpuBackend
    from smneuron.errors import ArtifactError
    from smneuron.serving.model import load_compiled

    manifest = opt_ml / "model" / "manifest.json"
    data = json.loads(manifest.read_text())
    data["versions"]["torch"] = "1.0.0"
    manifest.write_text(json.dumps(data))
    with pytest.raises(ArtifactError, match="torch 1.0.0"):
        load_compiled(opt_ml / "model", CpuBackend())
    (opt_ml / "model" / "compiled" / "b2-seq32.pt").unlink()
    with pytest.raises(ArtifactError, match="missing compiled/b2-seq32.pt"):
        load_compiled(opt_ml / "model", CpuBackend())
