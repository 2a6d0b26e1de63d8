"""The search tool: index source trees, query them from the shell (lean ONNX path) or over HTTP."""
