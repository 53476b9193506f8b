"""The run layer: a run folder, from training to report. Above the library, below the CLI.

Its parts, bottom to top; each module imports only the library and the modules listed before it:

    system.environment   the device and threads a run uses, the versions it runs with, phase timings
    system.limits        absurd sizes refused before allocating, with the memory they need
    system.launcher      --nproc N: the processes started, signals forwarded, errors printed once
    system.distributed   DDP under torchrun: process group, collective timeout, batch sharding, rank-0 I/O
    folder.validate      every field read back from a run folder, checked; settings an objective ignores
    folder.config        TrainConfig: every setting of a run, validated, as config.json
    folder.manifest      manifest.json: the SHA-256 of every run file scorematch reads back
    folder.checkpoint    verified safetensors checkpoints (each with its own manifest) and weights
    folder.runfiles      run.json and loss.csv
    folder.outdir        a run folder resumable or restartable: --out, --force, --resume, lock, clean-up
    build.parts          model, noise schedule and loss of a run, built from its config
    build.user_model     a user's own module (the protocol), data given in memory, save/load of a bare model
    build.loading        load (the trained model), run_data and held_out (its data), data_score
    build.start          the data, its standardisation and the model a new or resumed run starts from
    sampling.space       a trained model as the samplers see it: unwrapped, its shape, its noise process
    sampling.generate    samples of a trained model with any sampler, defaults from its run, classes and guidance
    sampling.inpaint     the unknown part of x filled in given the rest (an .npz of x and mask), three methods
    sampling.draw        `scorematch sample` as one call: samples or inpainting, split over torchrun processes
    training.logs        loss.csv, TensorBoard, progress bar
    training.posthoc     post-hoc EMA: power-EMA snapshots while training, a run folder of any EMA length after
    training.loop        train: set-up, one step, logging, checkpointing
    reporting.features   the feature network of labelled images (cached by the data) and the image metrics
    reporting.evaluate   scores and samples of a run against closed forms and held-out data
    reporting.figures    the PNG figures of a run
    reporting.html       the self-contained HTML report of a run
    tables.folder        a table run: CSV with typed columns and blanks, trained, sampled, imputed, evaluated
    tables.report        the HTML report of a table run: evaluation, per-column marginals, correlation matrices
"""
