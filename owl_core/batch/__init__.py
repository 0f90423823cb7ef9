"""`owl-studio label`: the batch labeling job over a folder (`job`), its resumable outputs
(`outputs`) and its Ray Data scale-out (`ray_embed`). Imports the foundation, `engine` and
`project`."""
