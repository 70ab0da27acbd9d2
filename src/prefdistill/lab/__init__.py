"""Small, exactly solvable labs that check the methods' maths where the answer is known.

    prefdistill lab bandit            # Faster WIND's contextual bandit: exact update, WIND / SPPO / BOND / J-BOND

`preferences` holds the exact tabular game (preference matrices, equilibrium, duality gap,
Best-of-2); `bandit` the sample-based methods and the experiment; `bandit_report` its report.
"""
