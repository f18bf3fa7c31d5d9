"""Unit conversions shared by the evaluators and their results."""

# h·1 THz / k_B (CODATA 2018), the factor MDR and phonopy use to quote frequencies in K
THZ_TO_K = 47.99243073366221
