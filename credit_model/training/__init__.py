"""What only `train` needs: data readers and the committed data, the generator, training, evaluation, Concrete ML."""
