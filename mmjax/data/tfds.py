"""TFDS interop without TensorFlow: array_record builders and sources.

`prepare(dataset_dir, data_dir)` turns any mmjax dataset into a TFDS dataset that
`tfds.data_source("mmjax_dataset/<name>", data_dir=...)` reads; `TfdsSource` reads a
prepared TFDS array_record dataset (ours or anyone's whose features are named after
the schema fields) so the pipeline can train on it. TFDS needs every feature in
every example, so absent fields are zero-filled and flagged `has_<field>`: every field,
not only modalities, as the pipeline tells an absent risk or label from a zero one.
"""

from pathlib import Path
from typing import Any

import numpy as np
import tensorflow_datasets as tfds

from mmjax.data import schema
from mmjax.data.shards import DatasetError, Manifest, ShardedSource, read_manifest

VERSION = "1.1.0"  # 1.1: a has_<field> flag for every field, not only modalities


def _feature(spec: dict):
    if spec["dtype"] == "str":
        return tfds.features.Text()
    return tfds.features.Tensor(shape=tuple(spec["shape"]), dtype=np.dtype(spec["dtype"]))


def _empty(spec: dict):
    if spec["dtype"] == "str":
        return ""
    return np.zeros(spec["shape"], spec["dtype"])


class MmjaxDataset(tfds.core.GeneratorBasedBuilder):
    """A mmjax dataset folder as a TFDS dataset; the config name is the folder's dataset."""

    VERSION = tfds.core.Version(VERSION)

    def __init__(self, *, source_dir: str | Path, **kwargs):
        self._source_dir = Path(source_dir)
        self._manifest = read_manifest(self._source_dir)
        config = tfds.core.BuilderConfig(name=self._manifest.name)
        super().__init__(config=config, **kwargs)

    def _info(self) -> tfds.core.DatasetInfo:
        fields = self._manifest.fields
        features = {name: _feature(spec) for name, spec in fields.items()}
        features.update({f"has_{name}": np.bool_ for name in fields})
        return tfds.core.DatasetInfo(
            builder=self,
            description=f"mmjax dataset '{self._manifest.name}' from {self._source_dir}",
            features=tfds.features.FeaturesDict(features),
            metadata=tfds.core.MetadataDict(
                label_names=self._manifest.label_names, attributes=self._manifest.attributes
            ),
        )

    def _split_generators(self, dl_manager):
        return {split: self._generate_examples(split) for split in self._manifest.splits}

    def _generate_examples(self, split: str):
        source = ShardedSource(self._source_dir, split)
        fields = self._manifest.fields
        for index in range(len(source)):
            record = source[index]
            example = {name: record.get(name, _empty(spec)) for name, spec in fields.items()}
            example.update({f"has_{name}": name in record for name in fields})
            yield index, example


def prepare(source_dir: str | Path, data_dir: str | Path) -> Path:
    """Writes the TFDS array_record version of a mmjax dataset; returns its folder."""
    builder = MmjaxDataset(source_dir=source_dir, data_dir=str(data_dir),
                           file_format="array_record")
    builder.download_and_prepare()
    return Path(builder.data_dir)


class TfdsSource:
    """Random access to a prepared TFDS array_record split, as mmjax records."""

    def __init__(self, directory: str | Path, split: str):
        try:
            builder = tfds.builder_from_directory(str(directory))
            self._source = builder.as_data_source(split=split)
        except (ValueError, KeyError, FileNotFoundError) as e:
            raise DatasetError(f"{directory}: cannot open TFDS split '{split}' ({e})") from e
        info = builder.info
        features = info.features
        names = [name for name in features if name in schema.FIELDS]
        if not any(name in schema.MODALITIES for name in names):
            raise DatasetError(
                f"{directory}: no feature is named after a modality {schema.MODALITIES}"
            )
        fields = {}
        for name in names:
            feature = features[name]
            if isinstance(feature, tfds.features.Text):
                fields[name] = {"dtype": "str", "shape": []}
            else:
                fields[name] = {"dtype": schema.FIELDS[name][0], "shape": list(feature.shape)}
        metadata = dict(info.metadata or {})
        self.manifest = Manifest(
            name=info.name, fields=fields, label_names=list(metadata.get("label_names", [])),
            splits={}, attributes=dict(metadata.get("attributes", {})),
        )

    def __len__(self) -> int:
        return len(self._source)

    def __getitem__(self, index: int) -> dict[str, Any]:
        example = self._source[index]
        record = {}
        for name, spec in self.manifest.fields.items():
            if not example.get(f"has_{name}", True):
                continue  # zero-filled placeholder of an absent field
            value = example[name]
            if spec["dtype"] == "str":
                record[name] = value.decode() if isinstance(value, bytes) else str(value)
            elif name == "image" and value.dtype == np.uint8:
                record[name] = value.astype(np.uint16) * 257  # 8-bit to the stored 16-bit range
            else:
                record[name] = np.asarray(value).astype(spec["dtype"])
        return record
