from pathlib import Path

from setuptools import find_packages, setup

here = Path(__file__).parent
runtime = [
    line.split("#")[0].strip()
    for line in (here / "requirements" / "runtime.txt").read_text().splitlines()
    if line.split("#")[0].strip()
]

setup(
    name="jmmda-model",
    version="0.2.0",
    description="JMMDA-GAN CT-to-DWI synthesis (research use; output is synthetic, not for diagnosis)",
    long_description=(here / "README.md").read_text() if (here / "README.md").exists() else "",
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["jmmda_model", "jmmda_model.*"]),
    package_data={"jmmda_model": ["resources/*.json"]},
    install_requires=runtime,
    extras_require={"test": (here / "requirements" / "test.txt").read_text().split()},
    entry_points={"console_scripts": ["jmmda=jmmda_model.cli:main"]},
)
