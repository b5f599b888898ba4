"""Evaluate embeddings with the Market-1501 (query/gallery, cameras) or CUB-200-2011 (leave-one-out) protocol.

Features come from one of:
  --query Q.npz --gallery G.npz            saved embeddings (arrays feats, pids[, camids, paths]; without
                                           camids, add --no-camera-filter)
  --checkpoint CKPT [--config C] [--data-root R]
                                           embed the dataset's query/gallery images (the dataset from C, else
                                           from the checkpoint; the test transform stays the checkpoint's
                                           unless --config-transforms)
  --checkpoint CKPT --query SRC --gallery SRC
                                           embed your own images; SRC is a folder of Market-1501-named images
                                           (PPPP_cC...jpg), a folder of identity folders (<root>/<identity>/
                                           *.jpg; cameras from --camera-pattern, else add --no-camera-filter),
                                           a glob, a list file or a labels CSV (path,pid[,camid]; or --labels)
Protocol cub: --query alone (or a cub dataset): every item queries all others.

Examples:
  reid-eval --query q.npz --gallery g.npz --json metrics.json
  reid-eval --checkpoint runs/market/checkpoints/best.pth --flip --rerank --visualize 8
  reid-eval --checkpoint best.pth --query my_data/query --gallery my_data/gallery --no-camera-filter
  reid-eval --checkpoint best.pth --query cams/query --gallery cams/gallery --save-features feats/
  reid-eval --query q.npz --gallery g.npz --approximate hnsw --topk 500
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from reid_robust.cli.common import add_image_options, report_errors

if TYPE_CHECKING:
    from reid_robust.evaluation.report import FeatureSet

PROTOCOLS = ("market", "cub")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="reid-eval", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    src = p.add_argument_group("features")
    src.add_argument("--query", metavar="Q", help="query features (.npz) or images (folder, glob, list, labels CSV)")
    src.add_argument("--gallery", metavar="G", help="gallery features (.npz) or images")
    src.add_argument("--checkpoint", metavar="CKPT", help="checkpoint of reid-train to embed images with")
    src.add_argument("--config", metavar="C", help="YAML config giving the dataset (default: the checkpoint's)")
    src.add_argument("--config-transforms", action="store_true",
                     help="with --config: also take its test transform (default: the checkpoint's own)")
    src.add_argument("--data-root", metavar="R", help="dataset root, overriding data.root of the config")
    add_image_options(src)
    src.add_argument("--save-features", metavar="DIR", help="write the extracted features to DIR/query.npz "
                     "and DIR/gallery.npz")
    _protocol_options(p.add_argument_group("protocol"))
    _search_options(p.add_argument_group("approximate search (FAISS)"))
    out = p.add_argument_group("output")
    out.add_argument("--json", metavar="OUT", help="write the metrics (fractions) as JSON")
    out.add_argument("--visualize", type=int, default=0, metavar="N",
                     help="save ranked-list pictures (query + top 10) for N queries; needs image paths")
    out.add_argument("--visualize-dir", default="ranked_lists", metavar="DIR", help="(default ranked_lists)")
    out.add_argument("--threads", type=int, default=0, help="torch and FAISS threads (default: library default)")
    return p


def _protocol_options(ev: argparse._ArgumentGroup) -> None:
    ev.add_argument("--protocol", choices=PROTOCOLS,
                    help="market (query/gallery with cameras) or cub (leave-one-out); default: the dataset's "
                         "protocol, market for features and folders")
    ev.add_argument("--metric", choices=("cosine", "euclidean"), default="cosine",
                    help="cosine (L2-normalised features, inner product) or euclidean distance (default cosine)")
    ev.add_argument("--ap-mode", choices=("standard", "official"), default="standard",
                    help="standard AP (torchreid, fast-reid) or the official MATLAB trapezoid rule")
    ev.add_argument("--max-rank", type=int, default=50, help="length of the CMC curve (default 50)")
    ev.add_argument("--no-camera-filter", action="store_true",
                    help="protocol market without the same-camera rule: every gallery item of the query's identity "
                         "is a true match (for features without camids; a copy of the query image in the gallery "
                         "then counts as a match too)")
    ev.add_argument("--rerank", action="store_true", help="k-reciprocal re-ranking (Zhong et al. 2017)")
    ev.add_argument("--k1", type=int, default=20, help="re-ranking: k-reciprocal neighbourhood size (default 20)")
    ev.add_argument("--k2", type=int, default=6, help="re-ranking: neighbours of the local query expansion (default 6)")
    ev.add_argument("--lambda-value", type=float, default=0.3,
                    help="re-ranking: weight of the original distance beside the Jaccard distance (default 0.3)")


def _search_options(ap: argparse._ArgumentGroup) -> None:
    ap.add_argument("--approximate", choices=("ivf", "hnsw"), help="approximate index instead of exact scores; "
                    "matches ranked beyond --topk count as missed")
    ap.add_argument("--topk", type=int, default=1000, help="items retrieved per query (default 1000)")
    ap.add_argument("--nlist", type=int, help="IVF lists (default ~4 sqrt(gallery))")
    ap.add_argument("--nprobe", type=int, default=32, help="IVF lists visited per query")
    ap.add_argument("--hnsw-m", type=int, default=32, help="HNSW links per node")
    ap.add_argument("--ef-construction", type=int, default=64, help="HNSW candidates while building the graph")
    ap.add_argument("--ef-search", type=int, default=256, help="HNSW candidates at query time")


class UsageError(ValueError):
    """A user mistake: reported in one line, exit status 2."""


def is_feature_file(source: str) -> bool:
    from reid_robust.data.image_list import is_image_source

    return not is_image_source(source)


def _check_arguments(args: argparse.Namespace) -> None:
    if args.checkpoint is None:
        if args.query is None:
            raise UsageError("give --query Q.npz [--gallery G.npz], or --checkpoint CKPT")
        for flag, value in (("--flip", args.flip), ("--config", args.config), ("--data-root", args.data_root),
                            ("--save-features", args.save_features), ("--labels", args.labels),
                            ("--camera-pattern", args.camera_pattern)):
            if value:
                raise UsageError(f"{flag} needs --checkpoint (it applies when features are extracted)")
        for flag, source in (("--query", args.query), ("--gallery", args.gallery)):
            if source is not None and not is_feature_file(source):
                raise UsageError(f"{flag} {source} is images, not an .npz feature file: extracting their features "
                                 "needs --checkpoint CKPT")
    if (args.query is None) != (args.gallery is None) and args.protocol != "cub":
        raise UsageError("--query and --gallery go together (or use --protocol cub with --query alone)")
    if args.config and args.query is not None:
        raise UsageError("--config picks a dataset; it cannot be combined with --query/--gallery")
    if args.config_transforms and not args.config:
        raise UsageError("--config-transforms needs --config")
    bounds = (("--batch-size", args.batch_size, 1), ("--max-rank", args.max_rank, 1), ("--topk", args.topk, 1),
              ("--visualize", args.visualize, 0), ("--threads", args.threads, 0))
    for flag, value, low in bounds:
        if value < low:
            raise UsageError(f"{flag} must be >= {low}, got {value}")
    if args.rerank and args.approximate:
        raise UsageError("--rerank and --approximate cannot be combined")
    _check_outputs(args)


def _check_outputs(args: argparse.Namespace) -> None:
    """Output paths that cannot be written are refused before any work is done."""
    from reid_robust.evaluation.report import check_output_path

    if args.json:
        check_output_path(args.json, "--json")
    if args.visualize:
        check_output_path(args.visualize_dir, "--visualize-dir", folder=True)
    if args.save_features:
        check_output_path(args.save_features, "--save-features", folder=True)


def load_inputs(args: argparse.Namespace):
    """Returns ``(protocol, query FeatureSet, gallery FeatureSet or None)``."""
    from reid_robust.evaluation.report import load_features

    if args.checkpoint is None:
        query = load_features(args.query, "query features", args.metric)
        gallery = load_features(args.gallery, "gallery features", args.metric) if args.gallery else None
        return args.protocol or "market", query, gallery
    embedder = _embedder(args)
    if args.query is not None:  # images (or npz files) given next to the checkpoint
        sets: list[FeatureSet | None] = []
        for what, source in (("query", args.query), ("gallery", args.gallery)):
            if source is None:
                sets.append(None)
            elif is_feature_file(source):
                sets.append(load_features(source, f"{what} features", args.metric))
            else:
                sets.append(embedder.embed(source, args.labels, args.camera_pattern, f"{what} images {source!r}"))
        return args.protocol or "market", sets[0], sets[1]
    return _dataset_inputs(args, embedder)


def _embedder(args: argparse.Namespace):
    """The checkpoint's embedder; with --config, its dataset (and with --config-transforms its transform)."""
    from reid_robust.config import load_config, with_overrides
    from reid_robust.engine.embed import Embedder, transform_of

    embedder = Embedder.from_checkpoint(args.checkpoint, args.device, batch_size=args.batch_size, flip=args.flip,
                                        progress=shown(args))
    cfg = embedder.config
    assert cfg is not None  # from_checkpoint keeps the checkpoint's config
    if args.config:
        other = load_config(args.config, [])
        data = other.data.to_dict()
        if not args.config_transforms:
            data.pop("transforms")
        cfg = with_overrides(cfg, {"data": data}, f"--config {args.config}")
    if args.data_root:
        cfg = with_overrides(cfg, {"data.root": args.data_root}, "--data-root")
    embedder.config = cfg
    embedder.transform = transform_of(cfg)
    size = "x".join(str(v) for v in cfg.data.transforms.size)
    whose = f"--config {args.config}" if args.config_transforms else f"checkpoint {args.checkpoint}"
    print(f"test transform of {whose}: images resized to {size} (height x width)")
    return embedder


def _dataset_inputs(args: argparse.Namespace, embedder):
    from reid_robust.engine.builders import build_dataset_from_config

    splits = build_dataset_from_config(embedder.config.data)
    protocol = args.protocol or splits.protocol
    for split in ("query",) if protocol == "cub" else ("query", "gallery"):
        if not getattr(splits, split):
            raise UsageError(f"no {splits.name} {split} images found")
    query = embedder.embed_records(splits.query, f"{splits.name} query")
    gallery = None if protocol == "cub" else embedder.embed_records(splits.gallery, f"{splits.name} gallery")
    return protocol, query, gallery


def save_features(directory: str, query, gallery) -> None:
    from reid_robust.evaluation.report import save_features as save

    for name, fs in (("query", query), ("gallery", gallery)):
        if fs is not None:
            path = save(Path(directory) / f"{name}.npz", fs)
            print(f"saved {len(fs)} {name} features to {path}")


def without_junk(features):
    """The items whose identity is not -1 (junk is dropped before re-ranking, as evaluate_reid does)."""
    import numpy as np

    from reid_robust.evaluation.report import FeatureSet

    keep = np.asarray(features.pids) != -1
    paths = None if features.paths is None else [p for p, k in zip(features.paths, keep) if k]
    names = None if features.identities is None else [n for n, k in zip(features.identities, keep) if k]
    camids = None if features.camids is None else np.asarray(features.camids)[keep]
    return FeatureSet(np.asarray(features.feats)[keep], np.asarray(features.pids)[keep], camids, paths, names,
                      features.source)


def rerank_distances(args: argparse.Namespace, query, gallery):
    """k-reciprocal re-ranked distances [Q, G] of the features as searched (normalised for cosine)."""
    from reid_robust.evaluation import k_reciprocal_rerank
    from reid_robust.evaluation.search import as_feature_matrix, prepare

    return k_reciprocal_rerank(prepare(as_feature_matrix(query.feats, "query_feats"), args.metric),
                               prepare(as_feature_matrix(gallery.feats, "gallery_feats"), args.metric),
                               k1=args.k1, k2=args.k2, lambda_value=args.lambda_value, progress=shown(args))


def shown(args: argparse.Namespace) -> bool | None:
    """The library's ``progress`` argument: automatic (a bar on a terminal, else log lines), off with --no-progress."""
    return False if args.no_progress else None


def check_cameras(args: argparse.Namespace, protocol: str, query, gallery) -> None:
    """Protocol market drops same-camera matches: features without camids need --no-camera-filter."""
    if protocol != "market":
        if args.no_camera_filter:
            raise UsageError("--no-camera-filter applies to protocol market only")
        return
    if args.no_camera_filter:
        return
    for features in (query, gallery):
        if features is not None and features.camids is None:
            raise UsageError(f"{features.source} has no camids: the Market-1501 protocol drops same-camera "
                             "matches; pass --no-camera-filter (camera_filter=False) to evaluate without that rule")


def evaluate(args: argparse.Namespace, protocol: str, query, gallery, distances=None) -> dict:
    from reid_robust.evaluation import ApproximateSearch, evaluate_reid_distances
    from reid_robust.evaluation.features_eval import evaluate_reid_features, evaluate_retrieval_features

    if protocol == "cub":
        if gallery is not None:
            raise UsageError("protocol cub is leave-one-out over one set: give --query alone")
        if args.rerank or args.approximate:
            raise UsageError("--rerank and --approximate apply to protocol market only")
        return evaluate_retrieval_features(query, metric=args.metric, progress=shown(args))
    if gallery is None:
        raise UsageError("protocol market needs a gallery (--gallery)")
    options = {"max_rank": args.max_rank, "ap_mode": args.ap_mode, "camera_filter": not args.no_camera_filter,
               "progress": shown(args)}
    if distances is not None:
        return evaluate_reid_distances(distances, query.pids, gallery.pids, query.camids, gallery.camids, **options)
    approximate = None
    if args.approximate:
        approximate = ApproximateSearch(kind=args.approximate, topk=args.topk, nlist=args.nlist, nprobe=args.nprobe,
                                        hnsw_m=args.hnsw_m, ef_construction=args.ef_construction,
                                        ef_search=args.ef_search)
    rerank_params = {"k1": args.k1, "k2": args.k2, "lambda_value": args.lambda_value} if args.rerank else None
    return evaluate_reid_features(query, gallery, metric=args.metric, approximate=approximate, rerank=args.rerank,
                                  rerank_params=rerank_params, **options)


def check_visualizable(query, gallery) -> None:
    """--visualize needs a query/gallery split with image paths (checked before any evaluation runs)."""
    if gallery is None:
        raise UsageError("--visualize needs a query/gallery evaluation (protocol market)")
    if not query.paths or not gallery.paths or not all(query.paths) or not all(gallery.paths):
        raise UsageError("--visualize needs image paths: extract features with --checkpoint, or store an array "
                         "'paths' in the .npz files")


def visualize(args: argparse.Namespace, query, gallery, distances=None) -> list[Path]:
    """Ranked-list pictures; ``run`` has checked ``check_visualizable`` before evaluating."""
    from reid_robust.evaluation.visualize import save_ranked_lists

    return save_ranked_lists(args.visualize_dir, query.paths, gallery.paths, query.feats, gallery.feats,
                             query.pids, gallery.pids, query.camids, gallery.camids, args.visualize,
                             metric=args.metric, distances=distances, camera_filter=not args.no_camera_filter)


def prepared_inputs(args: argparse.Namespace):
    """The checked inputs: ``(protocol, query, gallery)`` with pids present, matched by identity names, and
    cameras present unless --no-camera-filter."""
    from reid_robust.evaluation.features_eval import with_shared_pids

    protocol, query, gallery = load_inputs(args)
    for features in (query, gallery):
        if features is not None:
            features.labelled()
    if gallery is not None:
        query, gallery = with_shared_pids(query, gallery)
    check_cameras(args, protocol, query, gallery)
    if args.visualize:
        check_visualizable(query, gallery)
    return protocol, query, gallery


def report(args: argparse.Namespace, protocol: str, metrics: dict, num_query: int, num_gallery: int | None) -> None:
    from reid_robust.evaluation.report import json_summary, metrics_table, write_json

    sizes = f"{num_query} queries" + (f" x {num_gallery} gallery" if num_gallery is not None else "")
    print(f"protocol {protocol}, {sizes}, metric {args.metric}" + (", re-ranked" if args.rerank else "")
          + (f", approximate {args.approximate}" if args.approximate else "")
          + (", no camera filter" if args.no_camera_filter else ""))
    print(metrics_table({"result": metrics}, protocol))
    if args.json:
        info = {"protocol": protocol, "metric": args.metric, "ap_mode": args.ap_mode, "rerank": args.rerank,
                "approximate": args.approximate, "num_query": num_query,
                "num_gallery": num_gallery, "camera_filter": not args.no_camera_filter}
        print(f"wrote {write_json(args.json, json_summary(metrics, **info))}")


def run(args: argparse.Namespace) -> dict:
    _check_arguments(args)
    if args.threads:
        from reid_robust.evaluation import set_num_threads
        set_num_threads(args.threads)
    protocol, query, gallery = prepared_inputs(args)
    if args.save_features:
        save_features(args.save_features, query, gallery)
    distances = None
    num_gallery = None if gallery is None else len(gallery)  # as given, junk included
    if args.rerank and args.visualize and protocol == "market" and gallery is not None:
        # the pictures need whole rows: the re-ranked [Q, G] matrix is computed once, for them and the metrics
        # (without --visualize, the metrics are computed block by block in bounded memory)
        gallery = without_junk(gallery)
        distances = rerank_distances(args, query, gallery)
    metrics = evaluate(args, protocol, query, gallery, distances)
    report(args, protocol, metrics, len(query), num_gallery)
    if args.visualize:
        written = visualize(args, query, gallery, distances)
        print(f"wrote {len(written)} ranked lists to {args.visualize_dir}")
    return metrics


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return report_errors(lambda: (run(args), 0)[1])
