"""datatrove 0.10 on recipe (a) (exact dedup: signature -> find -> filter) or (b) (MinHash, 4 stages)."""
import sys

from datatrove.executor import LocalPipelineExecutor
from datatrove.pipeline.filters import LambdaFilter
from datatrove.pipeline.readers import JsonlReader
from datatrove.pipeline.writers import JsonlWriter

def adapter(self, data, path, id_in_file):
    return {"text": f"{data['instruction']}\n{data['input']}\n{data['output']}", "id": f"{path}/{id_in_file}"}


def reader(data_dir):
    return JsonlReader(data_dir, adapter=adapter, glob_pattern="*.jsonl")


def length(doc):
    return 10 <= len(doc.text) <= 10000


def content(doc) -> str:
    return doc.text


def main() -> None:
    recipe_name, data_dir, work, workers = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    TASKS = 10  # the input is 10 files: datatrove parallelizes by file
    if recipe_name == "a":
        from datatrove.pipeline.dedup.exact_dedup import ExactDedupConfig, ExactDedupFilter, ExactDedupSignature, ExactFindDedups

        cfg = ExactDedupConfig(content_getter=content)
        LocalPipelineExecutor([reader(data_dir), LambdaFilter(length), ExactDedupSignature(f"{work}/sigs", cfg)], tasks=TASKS, workers=workers,
                              logging_dir=f"{work}/logs/s1").run()
        LocalPipelineExecutor([ExactFindDedups(f"{work}/sigs", f"{work}/dups", cfg)], tasks=1, logging_dir=f"{work}/logs/s2").run()
        LocalPipelineExecutor([reader(data_dir), LambdaFilter(length), ExactDedupFilter(f"{work}/dups", cfg), JsonlWriter(f"{work}/out")],
                              tasks=TASKS, workers=workers, logging_dir=f"{work}/logs/s3").run()
    else:
        from datatrove.pipeline.dedup.minhash import (MinhashConfig, MinhashDedupBuckets, MinhashDedupCluster, MinhashDedupFilter,
                                                      MinhashDedupSignature)

        cfg = MinhashConfig(n_grams=5, num_buckets=16, hashes_per_bucket=8)  # 128 hashes, as ptdata
        LocalPipelineExecutor([reader(data_dir), MinhashDedupSignature(f"{work}/sigs", config=cfg)], tasks=TASKS, workers=workers,
                              logging_dir=f"{work}/logs/s1").run()
        LocalPipelineExecutor([MinhashDedupBuckets(f"{work}/sigs", f"{work}/buckets", config=cfg)], tasks=cfg.num_buckets, workers=workers,
                              logging_dir=f"{work}/logs/s2").run()
        LocalPipelineExecutor([MinhashDedupCluster(f"{work}/buckets", f"{work}/remove", config=cfg)], tasks=1, logging_dir=f"{work}/logs/s3").run()
        LocalPipelineExecutor([reader(data_dir), MinhashDedupFilter(f"{work}/remove"), JsonlWriter(f"{work}/out")], tasks=TASKS, workers=workers,
                              logging_dir=f"{work}/logs/s4").run()
    import glob
    import gzip

    kept = sum(sum(1 for _ in gzip.open(p)) for p in glob.glob(f"{work}/out/*.jsonl.gz"))
    print(f"kept={kept}")


if __name__ == "__main__":  # pools with spawn/forkserver re-import this module
    main()
