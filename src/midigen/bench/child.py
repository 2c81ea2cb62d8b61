"""What the bench runs in a fresh interpreter (`run_child`): imports, a training epoch, a generate
call; prints one JSON line."""

from __future__ import annotations

import json
import sys
import time

from midigen.bench.core import FORBIDDEN_ON_PRODUCER_PATH, SEED_BATCH, SEED_SEQ_LEN
from midigen.bench.memory import AnonPeak, _max_rss_mb


def child_main(kind: str, config_json: str) -> None:
    """What `_run_child` runs in a fresh interpreter; prints one JSON line."""
    config = json.loads(config_json)
    if kind == "producer-import":
        start = time.perf_counter()
        import midigen.producer.bundle  # noqa: F401
        import midigen.producer.generate  # noqa: F401
        import midigen.producer.sampling  # noqa: F401

        import_s = time.perf_counter() - start
        from midigen.producer.generate import add_generate_arguments, generate_command

        ok, error = True, ""
        try:
            import argparse
            import contextlib
            import io

            parser = argparse.ArgumentParser()
            add_generate_arguments(parser)
            args = parser.parse_args(["--model", config["bundle"], "--num", "2", "--bars", "1", "--out", config["out"]])
            with contextlib.redirect_stdout(io.StringIO()):
                ok = generate_command(args) == 0
        except Exception as exc:  # noqa: BLE001 - reported, the import check still stands
            ok, error = False, f"{type(exc).__name__}: {exc}"[:160]
        loaded = sorted({m.split(".")[0] for m in sys.modules})
        print(json.dumps({"import_s": import_s, "generate_ok": ok, "error": error, "miditok": "miditok" in loaded,
                          "forbidden": [m for m in loaded if m in FORBIDDEN_ON_PRODUCER_PATH]}))
    elif kind == "training-import":
        start = time.perf_counter()
        import midigen.producer.bundle  # noqa: F401
        import midigen.data.datamodule  # noqa: F401
        import midigen.producer.generate  # noqa: F401
        import midigen.producer.sampling  # noqa: F401
        import midigen.train.app  # noqa: F401
        import midigen.train.module  # noqa: F401

        print(json.dumps({"import_s": time.perf_counter() - start}))
    elif kind == "train-epoch":
        import logging
        import warnings

        warnings.filterwarnings("ignore")
        logging.disable(logging.WARNING)
        import pytorch_lightning as pl

        from midigen.data.datamodule import EventDataModule
        from midigen.train.module import EventLSTMModule

        with AnonPeak() as sampler:  # from before the corpus is loaded to the end of the epoch
            dm = EventDataModule(root=config["root"], cache_dir=config["cache"], tokenizer=config["tokenizer"],
                                 scheme="windows", seq_len=SEED_SEQ_LEN, batch_size=SEED_BATCH,
                                 samples_per_epoch=config["windows"], seed=0)
            module = EventLSTMModule(model={"hidden_size": 64, "num_layers": 3, "input": "onehot"},
                                     tokenizer=config["tokenizer"],
                                     optim={"_target_": "torch.optim.Adam", "_partial_": True, "lr": 1e-3})
            trainer = pl.Trainer(max_epochs=1, limit_val_batches=0, num_sanity_val_steps=0, logger=False,
                                 enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                                 accelerator="cpu", devices=1)
            trainer.fit(module, datamodule=dm)
        print(json.dumps({"max_rss_mb": _max_rss_mb(), "max_anon_mb": sampler.peak, "file_mb": sampler.file_mb,
                          "tokens": int(dm.corpus.tokens.size)}))
    elif kind == "generate":
        from midigen.producer.bundle import load_bundle
        from midigen.producer.generate import GenerateRequest, generate_batch

        results = generate_batch(load_bundle(config["bundle"]), GenerateRequest(num=config["num"], bars=8, seed=0))
        print(json.dumps({"max_rss_mb": _max_rss_mb(), "files": len(results)}))
    else:
        raise SystemExit(f"unknown bench child {kind!r}")
