"""bupose: multi-person 2D human pose estimation in crowded scenes."""
__version__ = "0.1.0"
