"""data-juicer 1.6 on recipe (a) (text_length_filter + document_deduplicator) or (b) (document_minhash_deduplicator)."""
import sys

import yaml



def main() -> None:
    recipe_name, src, work, workers = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    if recipe_name == "a":
        process = [{"text_length_filter": {"min_len": 10, "max_len": 10000}},
                   {"document_deduplicator": {"lowercase": True, "ignore_non_character": True}}]
    else:
        process = [{"document_minhash_deduplicator": {"tokenization": "space", "window_size": 5, "lowercase": True,
                                                      "num_permutations": 128, "jaccard_threshold": 0.8}}]
    cfg = {"project_name": f"bench-{recipe_name}", "dataset_path": src, "export_path": f"{work}/out.jsonl", "np": workers,
           "text_keys": "text", "open_tracer": False, "use_cache": False, "process": process}
    path = f"{work}/dj.yaml"
    with open(path, "w") as f:
        yaml.safe_dump(cfg, f)
    from data_juicer.config import init_configs
    from data_juicer.core import DefaultExecutor

    DefaultExecutor(init_configs(args=["--config", path])).run()
    kept = sum(1 for _ in open(f"{work}/out.jsonl", "rb"))
    print(f"kept={kept}")


if __name__ == "__main__":  # pools with spawn/forkserver re-import this module
    main()
