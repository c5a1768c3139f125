"""The training files every sandbox stand-in holds from the start, by id: one that trains, one that fails its check."""

SAMPLE_FILE_ID = "file-sample"
FAILING_FILE_ID = "file-invalid"
