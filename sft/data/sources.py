"""Where the packaged data configs' datasets come from, for a data root that lacks them."""

# a packaged config's folder of the data root (conf/data: data_dir) -> how a user with internet
# gets its files
SOURCES = {
    "sst2": (
        "GLUE SST-2: unzip train.tsv, dev.tsv and test.tsv of "
        "https://dl.fbaipublicfiles.com/glue/data/SST-2.zip there, or read the Hugging Face "
        "dataset with data=hf_dataset (stanfordnlp/sst2)"
    ),
    "sst": (
        "the Stanford Sentiment Treebank's trees: unzip train.txt and dev.txt of "
        "https://nlp.stanford.edu/sentiment/trainDevTestTrees_PTB.zip there"
    ),
}
