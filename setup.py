"""Packaging hook: ship the top-level ``schemas/`` (the source of truth) inside the
package as ``pipeline.schemas``, so a wheel or a non-editable install finds them."""

from setuptools import find_packages, setup

setup(
    packages=[*find_packages(include=["pipeline", "pipeline.*"]), "pipeline.schemas"],
    package_dir={"pipeline.schemas": "schemas"},
)
