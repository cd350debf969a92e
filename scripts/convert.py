"""Convert a dataset's raw files to .spacy (see ``mgkd_spacy.cli.convert``)."""
from mgkd_spacy.cli.convert import app

if __name__ == "__main__":
    app()
