"""Operations: what the daily cycle and the sensors decide from the lake and the warehouse."""
