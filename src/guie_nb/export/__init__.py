"""Export: the trained embedding model as a scorer-ready `submission.zip`."""
