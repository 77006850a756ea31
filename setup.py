"""Packaging for source-mixpanel-export: the connector package and its console script."""

from setuptools import find_packages, setup

setup(
    name="source-mixpanel-export",
    version="0.1.0",
    description="Airbyte source for Mixpanel's Raw Event Export API: typed, lossless, incremental.",
    license="MIT",
    python_requires=">=3.11",
    packages=find_packages(include=["source_mixpanel_export", "source_mixpanel_export.*"]),
    install_requires=[
        "airbyte-cdk>=7,<8",
        "requests>=2.31",
        "jsonschema>=4",
        "pendulum>=3",
        "isal>=1.6,<2",  # gzip inflate 2-4x faster than zlib: see the README's Dependencies
    ],
    extras_require={
        "tests": [
            "pytest>=8",
            "pytest-xdist>=3",  # make test runs the suite on 2 workers
            "hypothesis>=6",
            "ruff>=0.6",
            "mypy>=1.10",
            "airbyte-connector-models>=0.1.12,<0.2",  # validates metadata.yaml with Airbyte's own models
            "airbyte>=0.71.3,<1",  # PyAirbyte, for the notebook-style test; requires airbyte-cdk>=7.28.3,<8
        ],
    },
    entry_points={"console_scripts": ["source-mixpanel-export=source_mixpanel_export.run:run"]},
)
