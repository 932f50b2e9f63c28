#!/usr/bin/env bash
# The gap / schedule study of the synthetic benchmark on the *dev* split (README "Towards the papers' regime").
#
#   bash scripts/dev_gap_study.sh SETTING STEPS EXPERIMENTS [SEEDS]
#   e.g. bash scripts/dev_gap_study.sh tg03 2500 source_only_synthetic,oracle_synthetic,dacs_synthetic
#
# SETTING names a generator setting, rendered with the dev seed 7 (source, target and val all differ from the
# reported data, seed 0) into data/dev_<SETTING>:
#   v3      the default generator (gap 1)
#   tg03    the thing classes' palettes and size at 0.3 of the gap (--thing-gap 0.3)
#   tg0     the thing classes drawn as in the source (--thing-gap 0); every other difference kept
#   tg0c0   tg0 with the target's camera placed as the source's (--camera-gap 0): height and horizon
#   tg0c05  tg0 with half the camera's gap (--camera-gap 0.5)
#   c0      the default generator with the target's camera placed as the source's (--camera-gap 0)
#   tg0c0p14  tg0c0 with the other materials' palettes at 1.4 of the gap (--palette-gap 1.4)
#   tg0c0x14  tg0c0 with textures, lighting, noise and hood at 1.4 (--gap 1.4), the palettes at 1.0
#   tg0c0x17, tg0c0x20  the same at 1.7 / 2.0
#   g15     gap 1.5, things at 0.3
#   fx15    textures, camera, lighting, noise and hood at 1.5; the palettes at 1.0, things at 0.3
#   pal15   the stuff palettes at 1.5, the rest at 1.0, things at 0.3
# STEPS sets trainer.max_steps; the mean teacher's alpha (the papers' 2.5 % window,
# conf/experiment/synthetic_uda_base.yaml), the one validation and the lr warm-up follow it in the configs.
# EXPERIMENTS: comma-separated experiment names; NAME@frozen_teacher / NAME@permuted_labels runs the negative
# controls of tests/controls.py on that method (uda.name gets the suffix). SEEDS: comma-separated (default 0).
# Environment: DATA_SEED=0 renders and trains on the *reported* split instead (data/synthetic_<SETTING>, the
# default data/synthetic for v3; logs/gap_study_seed0/...); EXTRA="key=value ..." appends overrides to every
# run (e.g. trainer.accelerator=gpu); TAG=name suffixes the logs folder (<SETTING>_<STEPS>_<TAG>, so that an
# EXTRA sweep such as optim.lr=2.4e-3 does not overwrite the plain runs); JOBS=K runs one job per (experiment,
# seed), K at a time, through scripts/run_parallel.py (DEADLINE=seconds stops the rest), instead of one
# multirun per experiment.
# Runs land in logs/dev_gap_study/<SETTING>_<STEPS>/<experiment>/<seed>; the table of one folder:
#   python scripts/aggregate_results.py logs/dev_gap_study/<SETTING>_<STEPS> --per-class
set -euo pipefail
[ $# -ge 3 ] || { sed -n 2,32p "$0"; exit 2; }
setting=$1 steps=$2 experiments=$3 seeds=${4:-0}
case $setting in
  v3) flags=() ;;
  tg03) flags=(--thing-gap 0.3) ;;
  tg0) flags=(--thing-gap 0) ;;
  tg0c0) flags=(--thing-gap 0 --camera-gap 0) ;;
  tg0c05) flags=(--thing-gap 0 --camera-gap 0.5) ;;
  c0) flags=(--camera-gap 0) ;;
  tg0c0p14) flags=(--thing-gap 0 --camera-gap 0 --palette-gap 1.4) ;;
  tg0c0x14) flags=(--gap 1.4 --thing-gap 0 --camera-gap 0 --palette-gap 1.0) ;;
  tg0c0x17) flags=(--gap 1.7 --thing-gap 0 --camera-gap 0 --palette-gap 1.0) ;;
  tg0c0x20) flags=(--gap 2.0 --thing-gap 0 --camera-gap 0 --palette-gap 1.0) ;;
  g15) flags=(--gap 1.5 --thing-gap 0.3) ;;
  fx15) flags=(--gap 1.5 --thing-gap 0.3 --palette-gap 1.0) ;;
  pal15) flags=(--thing-gap 0.3 --palette-gap 1.5) ;;
  *) echo "dev_gap_study.sh: unknown SETTING '$setting' (the list: bash $0 without arguments)" >&2; exit 2 ;;
esac
cd "$(dirname "$0")/.."
py=${PYTHON:-.venv/bin/python}
data_seed=${DATA_SEED:-7}
if [ "$data_seed" = 7 ]; then
  root=data/dev_$setting logs=logs/dev_gap_study/${setting}_$steps
elif [ "$setting" = v3 ]; then
  root=data/synthetic logs=logs/gap_study_seed$data_seed/${setting}_$steps
else
  root=data/synthetic_$setting logs=logs/gap_study_seed$data_seed/${setting}_$steps
fi
logs=$logs${TAG:+_$TAG}
workers=${RENDER_WORKERS:-2}
"$py" scripts/make_synthetic.py "$root" --seed "$data_seed" "${flags[@]}" --workers "$workers"
# the same generator keys for the training's data.prepare (otherwise it would re-render the folder)
prepare=("data.prepare.seed=$data_seed")
for ((i = 0; i < ${#flags[@]}; i += 2)); do
  key=${flags[i]#--}
  prepare+=("+data.prepare.${key//-/_}=${flags[i + 1]}")
done
read -r -a extra <<< "${EXTRA:-}"
commands=()
for seed in ${seeds//,/ }; do  # JOBS: seed-major order, so that every row's first seed starts first
  for item in ${experiments//,/ }; do
    exp=${item%@*} control=${item#"$exp"} control=${control#@}
    overrides=()  # the negative control, when the item names one
    case $control in  # the run folder is named after the item itself (NAME or NAME@control)
      "") ;;
      frozen_teacher) overrides+=(uda.teacher._target_=tests.controls.FrozenTeacher) ;;
      permuted_labels) overrides+=(uda.pseudo._target_=tests.controls.PermutedPseudoLabeler) ;;
      *) echo "dev_gap_study.sh: unknown control '@$control' in '$item' (frozen_teacher, permuted_labels)" >&2
         exit 2 ;;
    esac
    [ -z "$control" ] || overrides+=("uda.name=${exp%_synthetic}_$control")
    args=("experiment=$exp" "data.root=$PWD/$root" "${prepare[@]}" "trainer.max_steps=$steps"
          "${overrides[@]}" callbacks.progress=null
          trainer.enable_progress_bar=false "${extra[@]}")
    if [ -z "${JOBS:-}" ]; then
      "$py" -m src.train -m "seed=$seeds" "${args[@]}" "hydra.sweep.dir=$logs/$item"
    else
      commands+=("$(printf '%q ' "$py" -m src.train "seed=$seed" "${args[@]}" "hydra.run.dir=$logs/$item/$seed")")
    fi
  done
  [ -n "${JOBS:-}" ] || break  # without JOBS each experiment ran all its seeds as one multirun
done
if [ -n "${JOBS:-}" ]; then
  mkdir -p "$logs"
  printf '%s\n' "${commands[@]}" > "$logs/commands.txt"
  deadline=()
  [ -z "${DEADLINE:-}" ] || deadline=(--deadline "$DEADLINE")
  "$py" scripts/run_parallel.py "$logs/commands.txt" --jobs "$JOBS" "${deadline[@]}" --log-dir "$logs/jobs"
fi
