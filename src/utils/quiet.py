"""Third-party lines a healthy run printed, silenced one by one (issue 16, "A clean first run").

What could be fixed at its cause was fixed there: pyproject.toml's license (setuptools' deprecation box),
`trainer.save_checkpoint(..., weights_only=False)` ("`weights_only` was not set"), the checkpoint callback
saving at the end of each validation instead of `every_n_train_steps` (Lightning's 12-line warning about
manual optimization) and `src.callbacks.progress.StepProgressBar` (`Epoch 0/-2`). What is left comes from
inside Lightning, where no setting of ours reaches it: each filter below matches one message of one module,
and says why that message is noise here. Any other warning or log line of those modules still shows.

`install()` is called by the entry points that build a Lightning trainer (`src.train`, `src.eval`);
calling it again changes nothing. tests/test_clean_output.py runs a training and fails on any line that is
neither ours nor on its allow-list, so a filter that stops matching (a new Lightning wording) shows up there.
"""

from __future__ import annotations

import logging
import warnings

from pytorch_lightning.utilities.warnings import PossibleUserWarning

#: Lightning's rank-zero messages (`rank_zero_info`) are logged by this logger.
LIGHTNING_RANK_ZERO_LOGGER = "pytorch_lightning.utilities.rank_zero"
#: Printed by every `pl.Trainer(...)` without a LitLogger (logger_connector.configure_logger): an
#: advertisement for an optional cloud service, with no setting to turn it off.
LITLOGGER_TIP = "💡 Tip: For seamless cloud logging and experiment tracking"


class _DropLitLoggerTip(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(LITLOGGER_TIP)


def install() -> None:
    """Install the filters (idempotent)."""
    # Lightning's CombinedLoader (pytorch_lightning/utilities/_pytree.py, 2.6.6) builds torch's deprecated
    # `LeafSpec()` itself, once for every loop over a data loader; nothing we pass avoids it. Only a Lightning
    # release that uses `torch.utils._pytree.treespec_leaf()` removes it.
    warnings.filterwarnings(
        "ignore",
        message=r"`isinstance\(treespec, LeafSpec\)` is deprecated",
        category=FutureWarning,
        module=r"pytorch_lightning\.utilities\._pytree",
    )
    # "Found 161 module(s) in eval mode at the start of training": the EMA teacher (src/uda/teacher.py) and
    # the frozen ImageNet encoder of the feature distance (src/uda/feature_distance.py) stay in eval mode by
    # design (no dropout / drop-path, no batch-norm updates) and are submodules of the LightningModule so that
    # checkpoints hold them; Lightning counts every one of their layers.
    warnings.filterwarnings(
        "ignore",
        message=r"Found \d+ module\(s\) in eval mode at the start of training",
        category=PossibleUserWarning,
        module=r"pytorch_lightning\.loops\.fit_loop",
    )
    logger = logging.getLogger(LIGHTNING_RANK_ZERO_LOGGER)
    if not any(isinstance(f, _DropLitLoggerTip) for f in logger.filters):
        logger.addFilter(_DropLitLoggerTip())
