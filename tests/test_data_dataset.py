"""ImageDataset: item dicts, label override, bbox crop, errors naming the file, the decoded-image cache."""
import os

import numpy as np
import pytest
import torch
from PIL import Image

from reid_robust.config import TransformConfig
from reid_robust.data import ImageDataset, ImageReadError, ImageRecord, build_transforms


@pytest.fixture
def records(tmp_path):
    out = []
    for i, colour in enumerate([(255, 0, 0), (0, 255, 0)]):
        path = tmp_path / f"img{i}.jpg"
        Image.new("RGB", (12, 20), colour).save(path)
        out.append(ImageRecord(str(path), pid=i + 3, camid=i))
    return out


def test_items_and_label_override(records):
    transform = build_transforms(TransformConfig(size=(16, 8)), train=False)
    dataset = ImageDataset(records, transform, labels=[1, 0])
    item = dataset[1]
    assert item["image"].shape == (3, 16, 8) and item["image"].dtype == torch.float32
    assert (item["label"], item["pid"], item["camid"], item["index"]) == (0, 4, 1, 1)
    assert ImageDataset(records, transform)[0]["label"] == 3
    batch = torch.utils.data.default_collate([dataset[0], dataset[1]])
    assert batch["image"].shape == (2, 3, 16, 8) and batch["label"].tolist() == [1, 0]


def test_no_transform_gives_unit_range_chw(records):
    image = ImageDataset(records, None)[0]["image"]
    assert image.shape == (3, 20, 12) and 0.9 < image[0].mean() <= 1.0 and image[1].mean() < 0.1


def test_bbox_crop(tmp_path):
    path = tmp_path / "box.png"
    img = Image.new("RGB", (10, 10), (0, 0, 0))
    img.paste((255, 255, 255), (2, 3, 6, 8))  # white box x 2..5, y 3..7
    img.save(path)
    image = ImageDataset([ImageRecord(str(path), 0, 0, bbox=(2, 3, 4, 5))], None)[0]["image"]
    assert image.shape == (3, 5, 4) and torch.all(image == 1.0)


def test_labels_length_mismatch(records):
    with pytest.raises(ValueError, match=r"shape \(2,\)"):
        ImageDataset(records, None, labels=[0, 1, 2])


def test_missing_and_corrupt_images_name_the_file(tmp_path, records):
    missing = ImageRecord(str(tmp_path / "gone.jpg"), 0, 0)
    with pytest.raises(ImageReadError, match="gone.jpg"):
        ImageDataset([missing], None)[0]
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8 definitely not a jpeg")
    with pytest.raises(ImageReadError, match="broken.jpg"):
        ImageDataset([ImageRecord(str(broken), 0, 0)], None)[0]


def test_workers_get_distinct_reproducible_augmentation(tmp_path):
    path = tmp_path / "noise.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (24, 12, 3), dtype=np.uint8)).save(path)
    transform = build_transforms(TransformConfig(size=(24, 12), pad=4, flip=0.5, random_erasing=0.0), train=True)
    dataset = ImageDataset([ImageRecord(str(path), 0, 0)] * 4, transform)

    def run(seed):
        loader = torch.utils.data.DataLoader(dataset, batch_size=1, num_workers=2,
                                             generator=torch.Generator().manual_seed(seed))
        return [batch["image"][0] for batch in loader]

    first = run(0)
    assert not torch.equal(first[0], first[1])  # items 0 and 1 come from different workers
    assert all(torch.equal(a, b) for a, b in zip(first, run(0)))


def test_main_process_augmentation_follows_torch_seed(tmp_path):
    path = tmp_path / "noise.png"
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (24, 12, 3), dtype=np.uint8)).save(path)
    cfg = {"size": [24, 12], "pad": 4, "random_erasing": 0.5}

    def run(seed):
        torch.manual_seed(seed)
        dataset = ImageDataset([ImageRecord(str(path), 0, 0)] * 3, build_transforms(TransformConfig.from_dict(cfg), train=True))
        return torch.stack([dataset[i]["image"] for i in range(3)])

    assert torch.equal(run(5), run(5)) and not torch.equal(run(5), run(6))


def test_per_image_seeds_make_augmentation_independent_of_workers_and_order(tmp_path):
    from reid_robust.data import PKSampler

    paths = []
    for i in range(4):
        path = tmp_path / f"noise{i}.png"
        Image.fromarray(np.random.default_rng(i).integers(0, 256, (24, 12, 3), dtype=np.uint8)).save(path)
        paths.append(path)
    cfg = {"size": [24, 12], "pad": 4, "flip": 0.5, "random_erasing": 0.5, "color_jitter": 0.3}
    dataset = ImageDataset([ImageRecord(str(p), i // 2, 0) for i, p in enumerate(paths)],
                           build_transforms(TransformConfig.from_dict(cfg), train=True))
    sampler = PKSampler([0, 0, 1, 1], num_identities=2, num_instances=2, seed=3, num_batches=3, augment_seeds=True)

    def run(workers):
        sampler.set_epoch(1)
        loader = torch.utils.data.DataLoader(dataset, batch_sampler=sampler, num_workers=workers)
        return [b["image"] for b in loader]

    single, pooled = run(0), run(2)
    assert all(torch.equal(a, b) for a, b in zip(single, pooled))
    # one (index, seed) pair gives one image whatever came before it; another seed gives another image
    pair = next(iter(sampler))[0]
    assert torch.equal(dataset[pair]["image"], dataset[pair]["image"])
    assert not torch.equal(dataset[pair]["image"], dataset[(pair[0], pair[1] + 1)]["image"])


def test_image_cache_gives_the_same_tensors_and_decodes_each_image_once(tmp_path, monkeypatch):
    from reid_robust.data import PKSampler
    from reid_robust.data import dataset as dataset_module

    records = []
    for i in range(4):
        path = tmp_path / f"cache{i}.jpg"
        Image.fromarray(np.random.default_rng(i).integers(0, 256, (24, 12, 3), dtype=np.uint8)).save(path)
        records.append(ImageRecord(str(path), i // 2, 0))
    cfg = {"size": [24, 12], "pad": 4, "flip": 0.5, "random_erasing": 0.5, "color_jitter": 0.3}
    transform = build_transforms(TransformConfig.from_dict(cfg), train=True)
    sampler = PKSampler([0, 0, 1, 1], num_identities=2, num_instances=2, seed=3, num_batches=3, augment_seeds=True)
    reads = []
    real_load = dataset_module.load_image
    monkeypatch.setattr(dataset_module, "load_image", lambda record: reads.append(record.path) or real_load(record))

    def epochs(dataset, workers):
        out = []
        for epoch in (0, 1):
            sampler.set_epoch(epoch)
            out += [b["image"] for b in torch.utils.data.DataLoader(dataset, batch_sampler=sampler, num_workers=workers)]
        return out

    plain = epochs(ImageDataset(records, transform), 0)
    assert len(reads) == 4 * 3 * 2  # 3 batches of 4 per epoch, each image read again
    test = build_transforms(TransformConfig(size=(24, 12)), train=False)
    assert torch.equal(ImageDataset(records, test, cache_images=True)[2]["image"], ImageDataset(records, test)[2]["image"])
    assert torch.equal(ImageDataset(records, None, cache_images=True)[1]["image"], ImageDataset(records, None)[1]["image"])
    reads.clear()
    cached = ImageDataset(records, transform, cache_images=True)
    assert sorted(reads) == sorted(r.path for r in records)  # filled once, when built
    assert cached.cache_bytes == 4 * 24 * 12 * 3 and ImageDataset(records, transform).cache_bytes == 0
    for record in records:
        os.remove(record.path)  # a read from now on fails, in the main process and in a worker
    for workers in (0, 2):  # forked workers share the filled cache
        again = epochs(cached, workers)
        assert len(again) == len(plain) and all(torch.equal(a, b) for a, b in zip(plain, again))
    assert len(reads) == 4
