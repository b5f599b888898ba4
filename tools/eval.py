#!/usr/bin/env python
"""Evaluate embeddings with the Market-1501 (query/gallery, cameras) or CUB-200-2011 (leave-one-out) protocol.

Features come from one of:
  --query Q.npz --gallery G.npz            saved embeddings (arrays feats, pids[, camids, paths]; without
                                           camids, add --no-camera-filter)
  --checkpoint CKPT [--config C] [--data-root R]
                                           extract them from the dataset's query/gallery images
                                           (dataset and test transform from C, else from the checkpoint)
  --checkpoint CKPT --query DIR --gallery DIR
                                           folders of Market-1501-named images (PPPP_cC...jpg), e.g. your
                                           own camera network
Protocol cub: --query Q.npz alone (or a cub dataset): every item queries all others.

Examples:
  python tools/eval.py --query q.npz --gallery g.npz --json metrics.json
  python tools/eval.py --checkpoint runs/market/checkpoints/best.pth --flip --rerank --visualize 8
  python tools/eval.py --checkpoint best.pth --query cams/query --gallery cams/gallery --save-features feats/
  python tools/eval.py --query q.npz --gallery g.npz --approximate hnsw --topk 500
"""
from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

PROTOCOLS = ("market", "cub")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    src = p.add_argument_group("features")
    src.add_argument("--query", metavar="Q", help="query features (.npz) or a folder of Market-1501-named images")
    src.add_argument("--gallery", metavar="G", help="gallery features (.npz) or a folder of images")
    src.add_argument("--checkpoint", metavar="CKPT", help="checkpoint of tools/train_reid.py to extract features")
    src.add_argument("--config", metavar="C", help="YAML config giving the dataset and test transform "
                     "(default: the checkpoint's own config)")
    src.add_argument("--data-root", metavar="R", help="dataset root, overriding data.root of the config")
    src.add_argument("--flip", action="store_true", help="average each embedding with its mirror image's")
    src.add_argument("--batch-size", type=int, default=64, help="images per forward pass (default 64)")
    src.add_argument("--device", default="cpu", help="device for feature extraction (default cpu)")
    src.add_argument("--save-features", metavar="DIR", help="write the extracted features to DIR/query.npz "
                     "and DIR/gallery.npz")
    ev = p.add_argument_group("protocol")
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
    ap = p.add_argument_group("approximate search (FAISS)")
    ap.add_argument("--approximate", choices=("ivf", "hnsw"), help="approximate index instead of exact scores; "
                    "matches ranked beyond --topk count as missed")
    ap.add_argument("--topk", type=int, default=1000, help="items retrieved per query (default 1000)")
    ap.add_argument("--nlist", type=int, help="IVF lists (default ~4 sqrt(gallery))")
    ap.add_argument("--nprobe", type=int, default=32, help="IVF lists visited per query")
    ap.add_argument("--hnsw-m", type=int, default=32, help="HNSW links per node")
    ap.add_argument("--ef-construction", type=int, default=64, help="HNSW candidates while building the graph")
    ap.add_argument("--ef-search", type=int, default=256, help="HNSW candidates at query time")
    out = p.add_argument_group("output")
    out.add_argument("--json", metavar="OUT", help="write the metrics (fractions) as JSON")
    out.add_argument("--visualize", type=int, default=0, metavar="N",
                     help="save ranked-list pictures (query + top 10) for N queries; needs image paths")
    out.add_argument("--visualize-dir", default="ranked_lists", metavar="DIR", help="(default ranked_lists)")
    out.add_argument("--threads", type=int, default=0, help="torch and FAISS threads (default: library default)")
    return p


class UsageError(ValueError):
    """A user mistake: reported in one line, exit status 2."""


def _check_arguments(args) -> None:
    extracting = args.checkpoint is not None
    if not extracting:
        if args.query is None:
            raise UsageError("give --query Q.npz [--gallery G.npz], or --checkpoint CKPT")
        for flag, value in (("--flip", args.flip), ("--config", args.config), ("--data-root", args.data_root),
                            ("--save-features", args.save_features)):
            if value:
                raise UsageError(f"{flag} needs --checkpoint (it applies when features are extracted)")
    if (args.query is None) != (args.gallery is None) and args.protocol != "cub":
        raise UsageError("--query and --gallery go together (or use --protocol cub with --query alone)")
    if args.config and args.query is not None:
        raise UsageError("--config picks a dataset; it cannot be combined with --query/--gallery")
    bounds = (("--batch-size", args.batch_size, 1), ("--max-rank", args.max_rank, 1), ("--topk", args.topk, 1),
              ("--visualize", args.visualize, 0), ("--threads", args.threads, 0))
    for flag, value, low in bounds:
        if value < low:
            raise UsageError(f"{flag} must be >= {low}, got {value}")
    if args.rerank and args.approximate:
        raise UsageError("--rerank and --approximate cannot be combined")
    _check_outputs(args)


def _check_outputs(args) -> None:
    """Output paths that cannot be written are refused before any work is done."""
    from reid_robust.evaluation.report import check_output_path

    if args.json:
        check_output_path(args.json, "--json")
    if args.visualize:
        check_output_path(args.visualize_dir, "--visualize-dir", folder=True)
    if args.save_features:
        check_output_path(args.save_features, "--save-features", folder=True)


def _from_records(model, records, transform, args, what):
    from reid_robust.engine.inference import extract_features
    from reid_robust.evaluation.report import FeatureSet

    if not records:
        raise UsageError(f"no {what} images found")
    feats, pids, camids = extract_features(model, records, transform, batch_size=args.batch_size, flip=args.flip,
                                           device=args.device)
    return FeatureSet(feats, pids, camids, [r.path for r in records])


def load_inputs(args):
    """Returns ``(protocol, query FeatureSet, gallery FeatureSet or None)``."""
    from reid_robust.evaluation.report import load_features_npz

    protocol = args.protocol
    if args.checkpoint is None:
        for flag, source in (("--query", args.query), ("--gallery", args.gallery)):
            if source is not None and Path(source).is_dir():
                raise UsageError(f"{flag} {source} is a folder of images: extracting their features needs "
                                 "--checkpoint CKPT (without it, --query/--gallery are .npz feature files)")
        query = load_features_npz(args.query, "query features", args.metric)
        gallery = load_features_npz(args.gallery, "gallery features", args.metric) if args.gallery else None
        return protocol or "market", query, gallery

    from reid_robust.engine.builders import build_dataset_from_config, build_test_transform
    from reid_robust.engine.checkpoint import load_model_from_checkpoint

    model, cfg = load_model_from_checkpoint(args.checkpoint, device=args.device)
    if args.config:
        from reid_robust.engine.config import load_config
        cfg = {**cfg, "data": load_config(args.config, [])["data"]}
    if not isinstance(cfg.get("data"), dict):
        raise UsageError(f"checkpoint {args.checkpoint}: its config has no 'data' section; give --config C")
    if args.data_root:
        cfg = {**cfg, "data": {**cfg["data"], "root": args.data_root}}
    transform = build_test_transform(cfg)
    if args.query is not None:  # folders (or npz files) given next to the checkpoint
        from reid_robust.data.market1501 import load_market_folder

        sets = []
        for what, source in (("query", args.query), ("gallery", args.gallery)):
            if source is None:
                sets.append(None)
            elif Path(source).is_dir():
                sets.append(_from_records(model, load_market_folder(source, strict=False), transform, args, what))
            else:
                sets.append(load_features_npz(source, f"{what} features", args.metric))
        return protocol or "market", sets[0], sets[1]
    splits = build_dataset_from_config(cfg)
    protocol = protocol or splits.protocol
    query = _from_records(model, splits.query, transform, args, f"{splits.name} query")
    gallery = None if protocol == "cub" else _from_records(model, splits.gallery, transform, args,
                                                           f"{splits.name} gallery")
    return protocol, query, gallery


def save_features(directory, query, gallery) -> None:
    from reid_robust.models.export import save_embeddings_npz

    for name, fs in (("query", query), ("gallery", gallery)):
        if fs is not None and fs.camids is None:
            raise UsageError(f"--save-features: the {name} features have no camids to save")
    for name, fs in (("query", query), ("gallery", gallery)):
        if fs is not None:
            path = save_embeddings_npz(Path(directory) / f"{name}.npz", fs.feats, fs.pids, fs.camids,
                                       fs.paths or [""] * len(fs.pids))
            print(f"saved {len(fs.pids)} {name} features to {path}")


def without_junk(features):
    """The items whose identity is not -1 (junk is dropped before re-ranking, as evaluate_reid does)."""
    import numpy as np

    from reid_robust.evaluation.report import FeatureSet

    keep = np.asarray(features.pids) != -1
    paths = None if features.paths is None else [p for p, k in zip(features.paths, keep) if k]
    camids = None if features.camids is None else np.asarray(features.camids)[keep]
    return FeatureSet(np.asarray(features.feats)[keep], np.asarray(features.pids)[keep], camids, paths)


def rerank_distances(args, query, gallery):
    """k-reciprocal re-ranked distances [Q, G] of the features as searched (normalised for cosine)."""
    from reid_robust.evaluation import k_reciprocal_rerank
    from reid_robust.evaluation.search import as_feature_matrix, prepare

    return k_reciprocal_rerank(prepare(as_feature_matrix(query.feats, "query_feats"), args.metric),
                               prepare(as_feature_matrix(gallery.feats, "gallery_feats"), args.metric),
                               k1=args.k1, k2=args.k2, lambda_value=args.lambda_value)


def check_cameras(args, protocol, query, gallery) -> None:
    """Protocol market drops same-camera matches: features without camids need --no-camera-filter."""
    if protocol != "market":
        if args.no_camera_filter:
            raise UsageError("--no-camera-filter applies to protocol market only")
        return
    if args.no_camera_filter:
        return
    for source, features in ((args.query, query), (args.gallery, gallery)):
        if features is not None and features.camids is None:
            raise UsageError(f"{source} has no camids: the Market-1501 protocol drops same-camera matches; pass "
                             "--no-camera-filter (camera_filter=False) to evaluate without that rule")


def evaluate(args, protocol, query, gallery, distances=None) -> dict:
    from reid_robust.evaluation import ApproximateSearch, evaluate_reid, evaluate_reid_distances, evaluate_retrieval

    if protocol == "cub":
        if gallery is not None:
            raise UsageError("protocol cub is leave-one-out over one set: give --query alone")
        if args.rerank or args.approximate:
            raise UsageError("--rerank and --approximate apply to protocol market only")
        return evaluate_retrieval(query.feats, query.pids, metric=args.metric)
    if gallery is None:
        raise UsageError("protocol market needs a gallery (--gallery)")
    if distances is not None:
        return evaluate_reid_distances(distances, query.pids, gallery.pids, query.camids, gallery.camids,
                                       max_rank=args.max_rank, ap_mode=args.ap_mode,
                                       camera_filter=not args.no_camera_filter)
    approximate = None
    if args.approximate:
        approximate = ApproximateSearch(kind=args.approximate, topk=args.topk, nlist=args.nlist, nprobe=args.nprobe,
                                        hnsw_m=args.hnsw_m, ef_construction=args.ef_construction,
                                        ef_search=args.ef_search)
    rerank_params = {"k1": args.k1, "k2": args.k2, "lambda_value": args.lambda_value}
    return evaluate_reid(query.feats, gallery.feats, query.pids, gallery.pids, query.camids, gallery.camids,
                         metric=args.metric, max_rank=args.max_rank, ap_mode=args.ap_mode, approximate=approximate,
                         rerank=args.rerank, rerank_params=rerank_params if args.rerank else None,
                         camera_filter=not args.no_camera_filter)


def check_visualizable(query, gallery) -> None:
    """--visualize needs a query/gallery split with image paths (checked before any evaluation runs)."""
    if gallery is None:
        raise UsageError("--visualize needs a query/gallery evaluation (protocol market)")
    if not query.paths or not gallery.paths or not all(query.paths) or not all(gallery.paths):
        raise UsageError("--visualize needs image paths: extract features with --checkpoint, or store an array "
                         "'paths' in the .npz files")


def visualize(args, query, gallery, distances=None) -> list[Path]:
    """Ranked-list pictures; ``run`` has checked ``check_visualizable`` before evaluating."""
    from reid_robust.evaluation.visualize import save_ranked_lists

    return save_ranked_lists(args.visualize_dir, query.paths, gallery.paths, query.feats, gallery.feats,
                             query.pids, gallery.pids, query.camids, gallery.camids, args.visualize,
                             metric=args.metric, distances=distances, camera_filter=not args.no_camera_filter)


def run(args) -> dict:
    from reid_robust.evaluation.report import json_summary, metrics_table, write_json

    _check_arguments(args)
    if args.threads:
        from reid_robust.evaluation import set_num_threads
        set_num_threads(args.threads)
    protocol, query, gallery = load_inputs(args)
    check_cameras(args, protocol, query, gallery)
    if args.visualize:
        check_visualizable(query, gallery)
    if args.save_features:
        save_features(args.save_features, query, gallery)
    distances = None
    num_gallery = None if gallery is None else len(gallery.pids)  # as given, junk included
    if args.rerank and args.visualize and protocol == "market" and gallery is not None:
        # the pictures need whole rows: the re-ranked [Q, G] matrix is computed once, for them and the metrics
        # (without --visualize, the metrics are computed block by block in bounded memory)
        gallery = without_junk(gallery)
        distances = rerank_distances(args, query, gallery)
    metrics = evaluate(args, protocol, query, gallery, distances)
    sizes = f"{len(query.pids)} queries" + (f" x {num_gallery} gallery" if gallery is not None else "")
    print(f"protocol {protocol}, {sizes}, metric {args.metric}" + (", re-ranked" if args.rerank else "")
          + (f", approximate {args.approximate}" if args.approximate else "")
          + (", no camera filter" if args.no_camera_filter else ""))
    print(metrics_table(metrics, protocol))
    if args.json:
        info = {"protocol": protocol, "metric": args.metric, "ap_mode": args.ap_mode, "rerank": args.rerank,
                "approximate": args.approximate, "num_query": len(query.pids),
                "num_gallery": num_gallery, "camera_filter": not args.no_camera_filter}
        print(f"wrote {write_json(args.json, json_summary(metrics, **info))}")
    if args.visualize:
        written = visualize(args, query, gallery, distances)
        print(f"wrote {len(written)} ranked lists to {args.visualize_dir}")
    return metrics


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            run(args)
            code = 0
        except (ValueError, OSError) as exc:  # user mistakes (UsageError, ConfigError) and unreadable files
            message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            print(f"error: {message}", file=sys.stderr)
            code = 2
    for w in caught:
        if issubclass(w.category, UserWarning):
            print(f"warning: {w.message}", file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())
