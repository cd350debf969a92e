"""``mgkd.TimedConsoleLogger.v1``: spaCy's console logger that also keeps the training's wall time in the pipeline's meta."""
from typing import IO, Callable, Dict, Optional, Tuple

from spacy import Language
from spacy.training.loggers import console_logger_v3
from spacy.util import registry

META_KEY = "training_time"  # meta.json key: {"seconds", "steps", "words"} at the latest evaluation


@registry.loggers("mgkd.TimedConsoleLogger.v1")
def timed_console_logger(progress_bar: Optional[str] = None, console_output: bool = True, output_file: Optional[str] = None
                         ) -> Callable[[Language, IO, IO], Tuple[Callable[[Optional[Dict]], None], Callable[[], None]]]:
    """spacy.ConsoleLogger.v3 (same arguments and output) that also writes, at each evaluation, the seconds, steps and
    words trained so far into ``nlp.meta["training_time"]``.

    spacy train saves a checkpoint before it logs the step, and saves model-last once more when training ends, so
    model-last/meta.json holds the time of the whole run (up to its last evaluation) and model-best/meta.json the time
    up to the evaluation before its best one. The seconds are spaCy's own: from the first update, excluding
    ``[initialize]``.

    progress_bar (Optional[str]): "train", "eval" or None, as in spacy.ConsoleLogger.v3.
    console_output (bool): print the table of losses and scores.
    output_file (Optional[str]): JSONL file for the same log lines, or None.
    """
    setup_console = console_logger_v3(progress_bar=progress_bar, console_output=console_output, output_file=output_file)

    def setup_printer(nlp: Language, stdout: IO, stderr: IO) -> Tuple[Callable[[Optional[Dict]], None], Callable[[], None]]:
        log_console, finalize = setup_console(nlp, stdout, stderr)

        def log_step(info: Optional[Dict]) -> None:
            log_console(info)
            if info is not None:
                nlp.meta[META_KEY] = {"seconds": info["seconds"], "steps": info["step"], "words": info["words"]}

        return log_step, finalize

    return setup_printer
