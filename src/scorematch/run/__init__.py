"""The run layer: a run folder, from training to report. Above the library, below the CLI.

Modules, each importing only those listed before it (and the library):

    validate      every field read back from a run folder, checked; settings an objective ignores
    config        TrainConfig: every setting of a run, validated, as config.json
    manifest      manifest.json: the SHA-256 of every run file scorematch reads back
    checkpoint    verified safetensors checkpoints (each with its own manifest) and weights
    runinfo       run.json and loss.csv
    environment   the device and threads a run uses, the versions it runs with, phase timings
    limits        absurd sizes refused before allocating, with the memory they need
    launcher      --nproc N: the processes started, signals forwarded, errors printed once
    distributed   DDP under torchrun: process group, collective timeout, batch sharding, rank-0 I/O
    folder        a run folder resumable or restartable: --out, --force, --resume, lock, clean-up
    custom        a user's own module (the protocol), data given in memory, save/load of a bare model
    setup         model, noise schedule and loss of a run, built from its config
    loading       load (the trained model), run_data and held_out (its data), data_score
    inputs        the data, its standardisation and the model a new or resumed run starts from
    generate      samples of a trained model with any sampler, defaults from its run, classes and guidance
    inpaint       the unknown part of x filled in given the rest (an .npz of x and mask), three methods
    logs          loss.csv, TensorBoard, progress bar
    training      train: set-up, one step, logging, checkpointing
    evaluate      scores and samples of a run against closed forms and held-out data
    figures       the PNG figures of a run
    report        the self-contained HTML report of a run
"""
