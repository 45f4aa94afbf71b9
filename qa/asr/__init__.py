"""Speech recognition: Whisper weights (:mod:`.weights`), voice activity detection
(:mod:`.vad`), the batched decoder (:mod:`.engine`), text normalisation (:mod:`.text`), mono
role attribution (:mod:`.roles`) and accuracy evaluation (:mod:`.evaluate`). The stage that
uses them is :mod:`.stage` (the transcribe stage), with the features of :mod:`.features`."""
