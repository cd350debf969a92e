"""Put project.yml's assets in place from the data mirror or their URLs (see ``mgkd_spacy.cli.fetch``)."""
import typer

from mgkd_spacy.cli.fetch import fetch_cli

if __name__ == "__main__":
    typer.run(fetch_cli)
