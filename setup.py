from setuptools import find_packages, setup

setup(
    name="bupose",
    version="0.1.0",
    description="Multi-person 2D human pose estimation in crowded scenes: bottom-up and one-stage methods",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    packages=find_packages(include=["bupose", "bupose.*"]),
    python_requires=">=3.10",
    install_requires=[
        "torch",
        "torchvision",
        "numpy",
        "opencv-python-headless",
        "pycocotools",
        "faster-coco-eval",
        "albumentations",
        "pillow",
        "pyyaml",
        "tqdm",
    ],
    extras_require={
        "test": ["pytest", "pytest-timeout", "onnx", "onnxruntime"],  # onnx*: the export tests run too
        "export": ["onnx", "onnxruntime"],
    },
)
