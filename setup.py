"""Package list for setuptools (pyproject.toml holds everything else).

The import namespace is ``fewstep`` alone. The repository keeps ``graphs/`` (templates), ``frontend/``
(editor extensions) and ``bench/`` (experiments) at its top level; installed they become
``fewstep.graphs``, ``fewstep.frontend`` and ``fewstep.bench``. pyproject.toml cannot express
"find these packages, and map those folders into them", hence this file.
"""

from setuptools import find_namespace_packages, find_packages, setup

TOP_LEVEL_FOLDERS = {"graphs": "fewstep.graphs", "frontend": "fewstep.frontend", "bench": "fewstep.bench"}


def mapped_packages() -> tuple[list[str], dict[str, str]]:
    packages, package_dir = [], {}
    for folder, name in TOP_LEVEL_FOLDERS.items():
        subs = find_namespace_packages(where=folder, exclude=["__pycache__", "*.__pycache__"])
        for sub in ["", *subs]:
            full = f"{name}.{sub}" if sub else name
            packages.append(full)
            package_dir[full] = f"{folder}/{sub.replace('.', '/')}" if sub else folder
    return packages, package_dir


extra, package_dir = mapped_packages()
setup(packages=[*find_packages(include=["fewstep", "fewstep.*"]), *extra], package_dir=package_dir)
