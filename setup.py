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
        # onnx*, matplotlib: the export and plot tests run too
        "test": ["pytest", "pytest-timeout", "onnx", "onnxruntime", "onnxscript", "matplotlib"],
        # tools/export.py: onnxscript is what torch.onnx.export's default (dynamo) exporter needs
        "export": ["onnx", "onnxruntime", "onnxscript"],
        "plot": ["matplotlib"],  # tools/plot.py, tools/benchmarks/learning_curve.py --plot
    },
    entry_points={"console_scripts": ["bupose=bupose.cli:main"]},
)
