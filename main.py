"""`python main.py <spec|check|discover|read> ...`: the same as the `source-mixpanel-export` command."""

from source_mixpanel_export.run import run

if __name__ == "__main__":
    run()
