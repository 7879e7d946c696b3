"""`hpcrepro image`: build NVIDIA's training image from its published code.

One idea per module: `published` (the shipped per-file SHA-256s of NVIDIA's code), `code` (find,
fetch and verify an implementation folder), `requirements` (pin and localise the `git+`
requirements), `dockerfile` (parse NVIDIA's Dockerfile into build steps), `cache` (the one
image-cache file name), `enroot`, `apptainer`, `podman` (the builders), `build` (key, lock,
temp-and-rename), `tagcheck` (the warning for a prebuilt image).
"""
