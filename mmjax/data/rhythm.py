"""SynthMed's rhythm model, shared by the echo, the ECG and the heart sounds: sinus rhythm
with respiratory variation of the RR interval (shorter in inspiration) and jitter, or atrial
fibrillation's irregularly irregular intervals (gamma distributed, coefficient of variation
AF_RR_CV). Breathing at 9-21 breaths per minute."""

SINUS_VARIATION, BREATHING_HZ, SINUS_JITTER = (0.02, 0.05), (0.15, 0.35), 0.01
AF_RR_CV, MIN_RR_S = (0.18, 0.3), 0.3
