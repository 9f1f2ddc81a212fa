#!/bin/sh
# train.sh - titan-train on several ranks with OpenMPI's mpirun: on this
# host, or on the hosts of a hostfile.  With no settings it trains a tiny
# model on 2 ranks of this host, on a dataset it makes from a text every
# Debian system has, so the whole path can be tried in a minute.
#
#   share/titan/mpi/train.sh                              # try it
#   NP=4 CONFIG=run.json DATASET=c4.data share/titan/mpi/train.sh
#   HOSTFILE=hosts NP=16 THREADS=4 CONFIG=run.json DATASET=/shared/c4.data \
#       CHECKPOINTS=/shared/run1 share/titan/mpi/train.sh --training.steps=20000
#
# Arguments go to titan-train after the script's own, so they win.  Run it
# again after a stop or a failure and training resumes from the latest
# checkpoint in CHECKPOINTS, on any number of ranks.  man titan-train,
# PARALLELISM, says how the ranks split the work.
set -eu

NP=${NP:-2}                    # ranks in all
HOSTFILE=${HOSTFILE:-}         # empty: NP ranks on this host
THREADS=${THREADS:-1}          # CPU threads (and cores) per rank
CONFIG=${CONFIG:-}             # empty: the tiny try-out model below
DATASET=${DATASET:-try/data}   # a titan-pack directory, the same path on every host
CHECKPOINTS=${CHECKPOINTS:-try/checkpoint}
CORPUS=${CORPUS:-/usr/share/common-licenses/GPL-3}   # text for the try-out dataset
TITAN_BIN=${TITAN_BIN:-}       # where the tools are, if not on PATH
MPIRUN_FLAGS=${MPIRUN_FLAGS:-} # anything else for mpirun

bin=${TITAN_BIN:+$TITAN_BIN/}
# An absolute path: the other hosts start it without this shell's PATH.
train=$(command -v "${bin}titan-train") || {
	echo "train.sh: titan-train not found (set TITAN_BIN to the directory of the tools)" >&2
	exit 1
}
case $train in /*) ;; *) train=$(pwd)/$train ;; esac

if [ -z "$CONFIG" ]; then
	# debugmodel cut down to seconds a step on one core
	set -- --model.flavor=debugmodel --model.dim=64 --model.n_layers=2 \
		--model.n_heads=4 --model.n_kv_heads=2 --model.vocab_size=512 \
		--training.seq_len=64 --training.local_batch_size=4 --training.steps=200 \
		--metrics.log_freq=20 --checkpoint.interval=100 "$@"
	if [ ! -e "$DATASET/manifest.json" ]; then
		[ -r "$CORPUS" ] || {
			echo "train.sh: no dataset '$DATASET' and no text '$CORPUS' to make one from (set DATASET or CORPUS)" >&2
			exit 1
		}
		dir=$(dirname "$DATASET")
		mkdir -p "$dir"
		"${bin}titan-tok" train -q -o "$dir/tok.json" --vocab-size 512 \
			--special '<|begin_of_text|>' --special '<|end_of_text|>' "$CORPUS"
		"${bin}titan-pack" -q -t "$dir/tok.json" -o "$DATASET" --force --lines \
			--val-fraction 0.05 "$CORPUS"
	fi
else
	set -- -c "$CONFIG" "$@"
fi

if [ -n "$HOSTFILE" ]; then
	hosts="--hostfile $HOSTFILE"
else
	hosts="-H localhost:$NP"
fi
# OpenMPI refuses root unless told; a container often runs as root.
[ "$(id -u)" = 0 ] && MPIRUN_FLAGS="--allow-run-as-root $MPIRUN_FLAGS"

# --map-by slot:PE=THREADS gives each rank THREADS cores of its own, filling
# one host's slots before the next (neighbouring ranks, which form an FSDP
# group, share a host and its fast links); --bind-to core keeps each rank
# and its OpenMP threads on those cores, so ranks never compete for one.
# On a host with fewer cores than ranks, add MPIRUN_FLAGS=--oversubscribe
# and set BIND=none.
# -x passes OMP_NUM_THREADS to the ranks on every host.
export OMP_NUM_THREADS="$THREADS"
# shellcheck disable=SC2086 # hosts and MPIRUN_FLAGS are lists of words
exec mpirun $hosts -np "$NP" --map-by "slot:PE=$THREADS" --bind-to "${BIND:-core}" \
	-x OMP_NUM_THREADS $MPIRUN_FLAGS \
	"$train" --data.dataset="$DATASET" --checkpoint.enable \
	--checkpoint.folder="$CHECKPOINTS" "$@"
