"""Input pipelines: the bundled digits, TFDS sets, image folders, the search split and augmentation."""
