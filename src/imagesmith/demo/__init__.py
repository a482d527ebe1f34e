"""The offline demo model (issue 6): a synthetic captioned data set of shapes and a scorer that
checks what a picture shows. Training comes next; see the README's "Not done yet"."""
