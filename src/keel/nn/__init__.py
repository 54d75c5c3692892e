"""Network building blocks: encoders, the MLP, the whole network and its losses."""
