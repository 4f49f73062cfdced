import numpy as np
import pytest

from mmjax.config import ConfigError, DataConfig
from mmjax.data import pipeline, shards
from mmjax.data import tokenizer as tokenizer_lib

NUM_TRAIN, NUM_EVAL, SIZE = 37, 11, 16


def _record(i):
    record = {"patient_id": f"p{i}", "labels": np.array([i % 2, i % 3 == 0], np.uint8)}
    if i % 4 != 1:  # every fourth patient lacks an image
        rng = np.random.default_rng(i)
        record["image"] = rng.integers(0, 65535, (SIZE, SIZE, 1)).astype(np.uint16)
    if i % 5 != 2:
        record["report"] = f"patient {i} has findings number {i % 7}."
    return record


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    path = tmp_path_factory.mktemp("pipeline")
    shards.write_dataset(
        path, "toy",
        {"train": map(_record, range(NUM_TRAIN)),
         "eval": map(_record, range(100, 100 + NUM_EVAL))},
        {"patient_id": (), "image": (SIZE, SIZE, 1), "report": (), "labels": (2,)},
        ["odd", "triple"], records_per_shard=8,
    )
    reports = [_record(i).get("report", "") for i in range(NUM_TRAIN)]
    tokenizer_lib.train(reports, 100).save(str(path / "tokenizer.json"))
    return path


def _open(dataset, split="train", **overrides):
    cfg = DataConfig(path=str(dataset), **{"max_text_len": 16, **overrides})
    return pipeline.open_split(cfg, split, pipeline.load_tokenizer(cfg))



def test_same_seed_same_batches_and_epochs_reshuffle(dataset):
    source, transform = _open(dataset)
    a = pipeline.train_batches(source, transform, 8, seed=3)
    b = pipeline.train_batches(source, transform, 8, seed=3)
    for step in (0, 1, 7):
        for key in a[step]:
            np.testing.assert_array_equal(a[step][key], b[step][key])
    c = pipeline.train_batches(source, transform, 8, seed=4)
    assert not np.array_equal(a[0]["image"], c[0]["image"])


def test_resuming_at_step_k_gives_the_next_batches(dataset):
    source, transform = _open(dataset)
    batches = pipeline.train_batches(source, transform, 8, seed=0)
    straight = pipeline.iterate(batches, 0)
    expected = [next(straight) for _ in range(6)]
    resumed = pipeline.iterate(batches, 4)
    for want in expected[4:]:
        got = next(resumed)
        for key in want:
            np.testing.assert_array_equal(got[key], want[key])


def test_worker_processes_give_the_same_batches(dataset):
    source, transform = _open(dataset)
    batches = pipeline.train_batches(source, transform, 8, seed=0)
    in_process = pipeline.iterate(batches, 2)
    with_workers = pipeline.iterate(batches, 2, workers=1)
    for _ in range(3):
        want, got = next(in_process), next(with_workers)
        np.testing.assert_array_equal(got["image"], want["image"])


def test_hosts_split_the_same_global_batches_whatever_their_number(dataset):
    """Two hosts' batches at a step are the two halves of one host's global batch, rows
    and augmentation alike, so a run may resume on another number of hosts."""
    source, transform = _open(dataset)
    whole = pipeline.train_batches(source, transform, 8, seed=5)
    halves = [pipeline.train_batches(source, transform, 4, 5, host, 2) for host in range(2)]
    for step in (0, 3, 9):
        for key in whole[step]:
            joined = np.concatenate([halves[0][step][key], halves[1][step][key]])
            np.testing.assert_array_equal(joined, whole[step][key], err_msg=key)


def test_presence_masks_and_zero_fill(dataset):
    source, transform = _open(dataset)
    example = transform(source[1])  # patient 1 has no image
    assert not example["has_image"] and (example["image"] == 0).all()
    example = transform(source[2])  # patient 2 has no report
    assert not example["has_report"] and not example["text_mask"].any()
    example = transform(source[0])
    assert example["has_image"] and example["has_report"] and example["text_mask"].any()
    assert abs(example["image"].mean()) < 1e-4 and abs(example["image"].std() - 1) < 1e-3


def test_truncated_reports_are_flagged(dataset):
    source, transform = _open(dataset, max_text_len=6)
    example = transform(source[0])
    assert example["text_truncated"] and example["text_mask"].all()
    source, transform = _open(dataset, max_text_len=16)
    assert not transform(source[0])["text_truncated"]


def test_eval_covers_every_example_exactly_once_on_several_hosts(dataset):
    source, transform = _open(dataset, "eval")
    indices = []
    for host in range(2):
        batches = list(pipeline.eval_batches(source, transform, 4, host, 2))
        assert len(batches) == 2  # ceil(11 / (4 * 2)) on every host
        for batch in batches:
            assert batch["image"].shape == (4, SIZE, SIZE, 1)
            indices += batch["index"][batch["valid"]].tolist()
    assert sorted(indices) == list(range(NUM_EVAL))


def test_augmentation_never_flips_left_and_right():
    image = np.zeros((32, 32, 1), np.float32)
    image[:, :10] = 1.0  # bright on the image left
    rng = np.random.default_rng(0)
    for _ in range(50):
        out = pipeline.augment_image(image, rng)
        assert out[:, :8].mean() > out[:, -8:].mean() + 0.5


def test_batch_larger_than_the_host_share_is_a_clear_error(dataset):
    source, transform = _open(dataset)
    with pytest.raises(pipeline.ConfigError, match="global batch 64 .* exceeds the 37"):
        pipeline.train_batches(source, transform, 64, seed=0)


def test_train_fraction_uses_the_same_leading_examples_on_every_host():
    def transform(record, rng):
        return {"x": np.int32(record)}

    seen = [set(np.concatenate([pipeline.train_batches(list(range(100)), transform, 5, 0,
                                                       host, 2, fraction=0.2)[s]["x"]
                                for s in range(2)]))
            for host in range(2)]
    assert seen[0] | seen[1] == set(range(20)) and not seen[0] & seen[1]
    with pytest.raises(ConfigError, match="data.train_fraction"):
        pipeline.train_batches(list(range(10)), transform, 2, 0, fraction=0.0)


def _transform(fields: dict, **config) -> pipeline.ExampleTransform:
    cfg = DataConfig(modalities=tuple(config.pop("modalities")), **config)
    specs = {name: {"shape": list(shape)} for name, shape in fields.items()}
    return pipeline.ExampleTransform(cfg, specs, None, 0, audio_rate_hz=100)


def test_short_clips_get_frame_masks_and_standardise_over_real_frames():
    transform = _transform({"video": (6, 4, 4, 1)}, modalities=("video",))
    video = np.zeros((6, 4, 4, 1), np.uint8)
    video[:4] = np.random.default_rng(0).integers(0, 255, (4, 4, 4, 1))
    out = transform({"video": video, "video_length": np.uint16(4)})
    np.testing.assert_array_equal(out["video_mask"], [1, 1, 1, 1, 0, 0])
    real = out["video"][:4]
    assert abs(real.mean()) < 1e-5 and abs(real.std() - 1) < 1e-4
    assert not out["video"][4:].any()
    full = _transform({"video": (6, 4, 4, 1)}, modalities=("video",))({"video": video})
    assert full["video_mask"].all()  # a record without video_length: every frame is real
    # A random 3-frame window of a 4-frame clip stays inside the real frames when training.
    crop = _transform({"video": (6, 4, 4, 1)}, modalities=("video",), video_frames=3)
    for seed in range(8):
        out = crop({"video": video, "video_length": np.uint16(4)}, np.random.default_rng(seed))
        assert out["video_mask"].all() and out["video"].shape == (3, 4, 4, 1)


def test_audio_is_cropped_inside_its_real_samples_and_absent_audio_is_zero():
    transform = _transform({"audio": (500,)}, modalities=("audio",), audio_seconds=2.0)
    samples = np.zeros(500, np.float16)
    samples[:300] = np.linspace(-1, 1, 300)
    for seed in range(8):
        out = transform({"audio": samples, "audio_length": np.int32(300)},
                        np.random.default_rng(seed))
        assert out["audio"].shape == (200,) and out["audio_length"] == 200
        assert np.all(np.diff(out["audio"]) > 0)  # a window of the real ramp, no padding
    short = transform({"audio": samples, "audio_length": np.int32(120)})
    assert short["audio_length"] == 120 and not short["audio"][120:].any()
    absent = transform({})
    assert not absent["has_audio"] and not absent["audio"].any()
    with pytest.raises(ConfigError, match="audio_rate_hz"):
        pipeline.ExampleTransform(DataConfig(modalities=("audio",), audio_seconds=1.0),
                                  {"audio": {"shape": [500]}}, None, 0)({})


def test_images_fed_as_a_pretrained_tower_was_trained():
    """Resized, grey made RGB, normalised by the tower's mean and std; an absent
    image is zeros of the fed shape; unset, each image is standardised as before."""
    from mmjax.data.pipeline import image_shape, prepare_image, standardize
    cfg = DataConfig(image_size=8, image_channels=3, image_mean=(0.5, 0.4, 0.3),
                     image_std=(0.25, 0.5, 1.0))
    grey = np.linspace(0, 1, 16, dtype=np.float32).reshape(4, 4, 1)
    fed = prepare_image(grey, cfg)
    assert fed.shape == (8, 8, 3) == image_shape(cfg, (4, 4, 1))
    np.testing.assert_allclose(fed[..., 0] * 0.25 + 0.5, fed[..., 2] * 1.0 + 0.3, atol=1e-6)
    flat = prepare_image(np.full((4, 4, 1), 0.6, np.float32), cfg)
    np.testing.assert_allclose(flat[3, 5], [(0.6 - 0.5) / 0.25, (0.6 - 0.4) / 0.5, 0.3],
                               atol=1e-5)
    np.testing.assert_array_equal(prepare_image(grey, DataConfig()), standardize(grey))


@pytest.mark.parametrize("interpolation", ["bicubic", "bilinear", "nearest"])
def test_images_are_resized_with_the_towers_filter(interpolation):
    """data.image_interpolation is PIL's filter of that name, per channel, up and down."""
    from PIL import Image

    from mmjax.data.pipeline import prepare_image
    rng = np.random.default_rng(0)
    image = rng.random((12, 12, 3), dtype=np.float32)
    for size in (7, 20):
        cfg = DataConfig(image_size=size, image_interpolation=interpolation,
                         image_mean=(0.0,) * 3, image_std=(1.0,) * 3)
        want = np.stack([np.asarray(Image.fromarray(image[..., c], mode="F").resize(
            (size, size), Image.Resampling[interpolation.upper()])) for c in range(3)], -1)
        np.testing.assert_array_equal(prepare_image(image, cfg), want)
    other = "bilinear" if interpolation != "bilinear" else "bicubic"
    assert not np.array_equal(
        prepare_image(image, DataConfig(image_size=7, image_interpolation=interpolation)),
        prepare_image(image, DataConfig(image_size=7, image_interpolation=other)))
