"""Model code shared by every role: schema, data, preprocessing, training, compilation and loading."""
