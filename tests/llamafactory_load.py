"""Run by LLaMA-Factory's own venv (.venvs/llamafactory, scripts/install_llamafactory.sh), not by
pytest: load datasets with LLaMA-Factory's real data path and print what it yields, as JSON.

    python tests/llamafactory_load.py DATASET_DIR TOKENIZER_DIR NAME:STAGE ...

For each dataset name (an entry of DATASET_DIR/dataset_info.json) and stage (sft, rm, kto):
`aligned` is the number of examples after `llamafactory.data.loader._get_merged_dataset`
(parser.get_dataset_list -> loader._load_single_dataset -> converter.align_dataset, with
the stage check), `broken` how many of them the converter emptied (its "Skipping this abnormal
example"), and `examples` the number `llamafactory.data.get_dataset` returns for training (the
same plus the stage's dataset processor, which drops invalid examples). A stage the entry is
not for gives `refused` with LLaMA-Factory's message.
"""
from __future__ import annotations

import json
import sys
import tempfile

from transformers import AutoTokenizer, Seq2SeqTrainingArguments

from llamafactory.data import get_dataset, get_template_and_fix_tokenizer
from llamafactory.data.loader import _get_merged_dataset
from llamafactory.hparams import DataArguments, ModelArguments


def main() -> None:
    dataset_dir, tok_dir, *specs = sys.argv[1:]
    out = {}
    for spec in specs:
        name, stage = spec.rsplit(":", 1)
        tok = AutoTokenizer.from_pretrained(tok_dir)
        data_args = DataArguments(template="qwen", dataset=name, dataset_dir=dataset_dir, cutoff_len=8192,
                                  overwrite_cache=True, preprocessing_num_workers=None)
        model_args = ModelArguments(model_name_or_path=tok_dir)
        training_args = Seq2SeqTrainingArguments(output_dir=tempfile.mkdtemp(), report_to=[])
        template = get_template_and_fix_tokenizer(tok, data_args)
        try:
            aligned = _get_merged_dataset(data_args.dataset, model_args, data_args, training_args, stage)
        except ValueError as e:
            out[spec] = {"refused": str(e)}
            continue
        broken = sum(1 for ex in aligned if not ex["_prompt"] or not ex["_response"])
        module = get_dataset(template, model_args, data_args, training_args, stage=stage, tokenizer=tok)
        out[spec] = {"aligned": len(aligned), "broken": broken, "examples": len(module["train_dataset"]),
                     "columns": sorted(module["train_dataset"].column_names)}
    print("RESULT " + json.dumps(out))


if __name__ == "__main__":
    main()
