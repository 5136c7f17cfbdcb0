package com.example;

import java.util.*;

public class Main {
    public static void main(String[] args) {
        List<String> names = new ArrayList<>(List.of("Zoë", "Ann", "bob"));
        names.sort(String.CASE_INSENSITIVE_ORDER);
        System.out.println(String.join(", ", names) + " (" + names.size() + ")");
    }
}
