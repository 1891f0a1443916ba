"""hllm."""
