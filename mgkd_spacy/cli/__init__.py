"""The ``mgkd`` command line: the steps of the distillation project behind scripts/ and project.yml."""
import typer

from .annotate import annotate_cli
from .convert import app as convert_app
from .corpus import sample_cli
from .evaluate import evaluate_cli
from .fetch import fetch_cli
from .precision import precision_cli
from .report import report_cli
from .speed import speed_cli

app = typer.Typer(help="Multi-grained knowledge distillation for spaCy NER", no_args_is_help=True)
app.command("fetch")(fetch_cli)
app.add_typer(convert_app, name="convert")
app.command("sample")(sample_cli)
app.command("annotate")(annotate_cli)
app.command("evaluate")(evaluate_cli)
app.command("speed")(speed_cli)
app.command("precision")(precision_cli)
app.command("report")(report_cli)
