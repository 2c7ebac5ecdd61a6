"""The wheel also carries ``ray_slurm_private_tmp.pth`` at the top of site-packages: the start-up
hook that gives every Python of the Ray environment a private temp root
(``ray_slurm.hooks.usertmp``).
setuptools has no option for a top-level file, hence this one build step (as pytest-cov does)."""

import os

from setuptools import setup
from setuptools.command.build_py import build_py

PTH = "ray_slurm_private_tmp.pth"


class BuildPyWithPth(build_py):
    def run(self) -> None:
        super().run()
        self.copy_file(os.path.join("src", PTH), os.path.join(self.build_lib, PTH))

    def get_outputs(self, include_bytecode: bool = True) -> list[str]:
        return [*super().get_outputs(include_bytecode), os.path.join(self.build_lib, PTH)]


setup(cmdclass={"build_py": BuildPyWithPth})
