"""Storage backends: immutable named objects on a local folder or S3."""
